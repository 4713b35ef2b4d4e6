"""fastsafetensors.copier.registry: copier types by name.

A factory registered under a name is called as `factory(device, **kwargs)` and returns a
copier constructor. Built in: "gds", "nogds" and "3fs" (copier/builtin.py), whose
constructors carry warpload storage options. A constructor of any other kind can be
registered and created here, but BaseSafeTensorsFileLoader refuses it at
copy_files_to_device() (docs/python.md: fastsafetensors' copier interface works on its
private C++ buffers, which warpload does not have).
"""

from __future__ import annotations

from typing import Any, Callable, Dict

CopierType = str
CopierConstructFunc = Callable[..., Any]
CopierConstructorFactory = Callable[..., CopierConstructFunc]

_copier_registry: Dict[CopierType, CopierConstructorFactory] = {}


def register_copier_constructor(
        copier_type: CopierType) -> Callable[[CopierConstructorFactory], CopierConstructorFactory]:
    """Decorator: registers `factory` under `copier_type` (replacing an earlier one)."""

    def register(factory: CopierConstructorFactory) -> CopierConstructorFactory:
        _copier_registry[copier_type] = factory
        return factory

    return register


def create_copier_constructor(copier_type: CopierType, device: Any,
                              **kwargs: Any) -> CopierConstructFunc:
    """The constructor the factory registered as `copier_type` makes for `device`."""
    factory = _copier_registry.get(copier_type)
    if factory is None:
        raise KeyError(f"Copier type '{copier_type}' is not registered. "
                       f"Available types: {list(_copier_registry)}")
    return factory(device, **kwargs)
