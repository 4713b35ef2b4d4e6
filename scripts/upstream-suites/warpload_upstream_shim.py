"""pytest plugin: runs fastsafetensors' and safetensors' own test suites against warpload.

Loaded by run.py with `-p warpload_upstream_shim`. It makes `import fastsafetensors...` and
`import safetensors...` resolve to warpload's drop-ins and adds what those suites need that a
loader does not provide:

- a safetensors *writer* (save, save_file) for the suites' fixtures (writer.py);
- placeholders for upstream internals (fastsafetensors.cpp, its copier and buffer classes,
  SafeTensorsMetadata, TensorFrame; safetensors' serialize, TensorSpec, model helpers).
  Importing them works, so a test file's other tests run; using them raises
  UpstreamInternal, and the tests that do are reported as failures (docs/python.md lists
  them with the reason).

Of fastsafetensors.cpp only what the suites call around every test is answered, truthfully
for warpload: load_library_functions/set_debug_log/set_gil_release do nothing (and
common.resolve_cudart_lib_name, which only feeds the first, names libcudart.so),
is_hip_found() is False, and get_cpp_metrics().bounce_buffer_bytes is 0 (warpload frees its
staging memory inside each load; nothing is held between calls).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from typing import Any, Optional

import writer


class UpstreamInternal(NotImplementedError):
    pass


class _Placeholder:
    """An upstream internal: usable in annotations and isinstance-free code, raises when
    called or instantiated."""

    def __init__(self, qualname: str) -> None:
        self._qualname = qualname

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UpstreamInternal(f"{self._qualname} is an upstream internal that warpload's "
                               "drop-in does not provide")

    def __getattr__(self, name: str) -> "_Placeholder":
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self._qualname}.{name}")

    def __mro_entries__(self, bases: Any) -> tuple:
        return (object,)


def _stub_module(name: str, real: Optional[types.ModuleType] = None,
                 **extra: Any) -> types.ModuleType:
    """A module answering with `real`'s names, then `extra`, then placeholders."""
    module = types.ModuleType(name)
    module.__dict__.update(extra)

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if real is not None and hasattr(real, attr):
            return getattr(real, attr)
        return _Placeholder(f"{name}.{attr}")

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    module.__path__ = []  # a package, so that stubbed submodules import
    return module


class _Metrics:
    bounce_buffer_bytes = 0


def _fastsafetensors_modules() -> dict:
    import warpload
    import warpload.fastsafetensors as fst

    cpp = _stub_module(
        "fastsafetensors.cpp",
        load_library_functions=lambda *a, **k: None, set_debug_log=lambda *a, **k: None,
        set_gil_release=lambda *a, **k: None, is_hip_found=lambda: False,
        is_cuda_found=lambda: bool(warpload.cuda_available()),
        get_cpp_metrics=lambda: _Metrics())
    common = importlib.import_module("warpload.fastsafetensors.common")
    top = _stub_module("fastsafetensors", fst, cpp=cpp, __version__=warpload.__version__,
                       __file__=fst.__file__)
    modules = {
        "fastsafetensors": top,
        "fastsafetensors.cpp": cpp,
        # resolve_cudart_lib_name only feeds cpp.load_library_functions (a no-op here).
        "fastsafetensors.common": _stub_module("fastsafetensors.common", common,
                                               resolve_cudart_lib_name=lambda: "libcudart.so"),
    }
    for sub in ("loader", "file_buffer", "parallel_loader", "threefs_loader", "auto_loader",
                "config", "st_types", "copier", "copier.registry", "copier.threefs",
                "copier.gds", "copier.nogds", "frameworks", "frameworks._torch"):
        modules[f"fastsafetensors.{sub}"] = importlib.import_module(
            f"warpload.fastsafetensors.{sub}")
    return modules


def _safetensors_modules() -> dict:
    import warpload
    import warpload.numpy as wnp
    import warpload.torch as wtorch

    top = _stub_module("safetensors", None, safe_open=warpload.safe_open,
                       SafetensorError=warpload.SafetensorError,
                       __version__=warpload.__version__)
    torch_mod = _stub_module("safetensors.torch", wtorch, save=writer.save_torch,
                             save_file=writer.save_file_torch)
    numpy_mod = _stub_module("safetensors.numpy", wnp, save=writer.save_numpy,
                             save_file=writer.save_file_numpy)
    return {"safetensors": top, "safetensors.torch": torch_mod,
            "safetensors.numpy": numpy_mod}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Any other fastsafetensors.* / safetensors.* name: a placeholder module."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".")[0] in ("fastsafetensors", "safetensors") and "." in fullname:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        return _stub_module(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _install() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in ("fastsafetensors",
                                                                 "safetensors")]:
        del sys.modules[name]
    sys.modules.update(_fastsafetensors_modules())
    sys.modules.update(_safetensors_modules())
    sys.meta_path.insert(0, _AliasFinder())


# At import (-p loads plugins before the suites' conftest.py files import the packages).
_install()
