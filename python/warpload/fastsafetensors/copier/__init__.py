"""fastsafetensors.copier: the copier registry and the built-in copier types."""

from .builtin import (
    GdsFileCopier,
    NoGdsFileCopier,
    ThreeFSFileCopier,
    WarploadCopierConstructor,
    WarploadFileCopier,
)
from .registry import (
    CopierConstructFunc,
    CopierType,
    create_copier_constructor,
    register_copier_constructor,
)

__all__ = [
    "CopierConstructFunc",
    "CopierType",
    "GdsFileCopier",
    "NoGdsFileCopier",
    "ThreeFSFileCopier",
    "WarploadCopierConstructor",
    "WarploadFileCopier",
    "create_copier_constructor",
    "register_copier_constructor",
]
