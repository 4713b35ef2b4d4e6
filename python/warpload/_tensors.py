"""From DLPackTensor (the engine's zero-copy export) to framework tensors.

Every tensor is handed over through DLPack without a copy; the consumer's tensor holds a
reference to the loader's buffer, so it stays valid after the loader is closed or deleted.

dtype rules (nothing is converted):
  * the framework has the dtype and imports it through DLPack -> that dtype, directly;
  * the framework has the dtype but cannot import it (bool and uint16/32/64 in older torch,
    float8 in torch >= 2.1, bool in numpy) -> imported as a same-width integer, then
    re-viewed as the dtype (a zero-copy ``.view(dtype)``);
  * the framework lacks the dtype (float8 in torch 1.13, BF16/F8 in numpy, F4/F6_* anywhere)
    -> uint8 holding the raw bytes, last dimension in bytes; ``stored_dtype(tensor)`` and the
    handle's ``get_dtype(name)`` still give the file's dtype.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Dict, Optional, Tuple

from . import _warpload

TORCH_FRAMEWORKS = ("pt", "torch", "pytorch")
NUMPY_FRAMEWORKS = ("np", "numpy")

_TORCH_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
    "F16": "float16", "BF16": "bfloat16", "I32": "int32", "U32": "uint32", "F32": "float32",
    "F64": "float64", "I64": "int64", "U64": "uint64", "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
}
# Imported through DLPack by every torch version we support (1.13 and later).
_TORCH_DLPACK = {"U8", "I8", "I16", "I32", "I64", "F16", "BF16", "F32", "F64", "C64"}

_NUMPY_DTYPES = {
    "BOOL": "bool_", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
    "F16": "float16", "I32": "int32", "U32": "uint32", "F32": "float32", "F64": "float64",
    "I64": "int64", "U64": "uint64", "C64": "complex64",
}
_NUMPY_DLPACK = {"U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F16", "F32", "F64",
                 "C64"}

# Tensors returned as raw bytes: id -> (weak reference, file dtype).
_raw_lock = threading.Lock()
_raw_dtypes: Dict[int, Tuple[Any, str]] = {}


def framework_kind(framework: Optional[str]) -> str:
    """'torch', 'numpy' or 'dlpack' (a capsule) for a framework name."""
    name = (framework or "dlpack").lower()
    if name in TORCH_FRAMEWORKS:
        return "torch"
    if name in NUMPY_FRAMEWORKS:
        return "numpy"
    return "dlpack"


def is_raw_for(kind: str, dtype: str) -> bool:
    """Whether a tensor of this file dtype comes back as raw uint8 bytes in `kind`."""
    if kind == "torch":
        return _torch_dtype(dtype) is None
    if kind == "numpy":
        return dtype not in _NUMPY_DTYPES
    return _warpload.dtype_bits(dtype) % 8 != 0 or dtype.startswith("F8")


def convert(tensor: "_warpload.DLPackTensor", kind: str) -> Any:
    if kind == "torch":
        return _to_torch(tensor)
    if kind == "numpy":
        return _to_numpy(tensor)
    mode = "native" if tensor.supports("native") else "raw_bytes"
    return tensor.as_mode(mode).to_capsule()


def stored_dtype(tensor: Any) -> Optional[str]:
    """The safetensors dtype of a tensor warpload returned as raw bytes (e.g. "F8_E4M3"),
    or None for a tensor returned in its own dtype (or not from warpload)."""
    with _raw_lock:
        entry = _raw_dtypes.get(id(tensor))
    if entry is None or entry[0]() is not tensor:
        return None
    return entry[1]


def _remember_raw(tensor: Any, dtype: str) -> None:
    key = id(tensor)

    def forget(_ref: Any, key: int = key) -> None:
        with _raw_lock:
            entry = _raw_dtypes.get(key)
            if entry is not None and entry[0] is _ref:
                del _raw_dtypes[key]

    ref = weakref.ref(tensor, forget)
    with _raw_lock:
        _raw_dtypes[key] = (ref, dtype)


def _torch_dtype(dtype: str) -> Any:
    import torch

    name = _TORCH_DTYPES.get(dtype)
    return getattr(torch, name, None) if name is not None else None


def _to_torch(tensor: "_warpload.DLPackTensor") -> Any:
    from torch.utils import dlpack as torch_dlpack

    dtype = tensor.dtype
    target = _torch_dtype(dtype)
    if target is not None and dtype in _TORCH_DLPACK:
        return torch_dlpack.from_dlpack(tensor.to_capsule())
    if target is not None:
        carrier = torch_dlpack.from_dlpack(tensor.as_mode("carrier").to_capsule())
        return carrier.view(target)
    raw = torch_dlpack.from_dlpack(tensor.as_mode("raw_bytes").to_capsule())
    _remember_raw(raw, dtype)
    return raw


def _to_numpy(tensor: "_warpload.DLPackTensor") -> Any:
    import numpy as np

    if tensor.device != "cpu":
        raise ValueError(f"tensor '{tensor.name}' is on {tensor.device}; NumPy arrays live in "
                         "host memory (load with device='cpu')")
    dtype = tensor.dtype
    if dtype in _NUMPY_DLPACK:
        return np.from_dlpack(tensor)
    if dtype in _NUMPY_DTYPES:
        return np.from_dlpack(tensor.as_mode("carrier")).view(getattr(np, _NUMPY_DTYPES[dtype]))
    raw = np.from_dlpack(tensor.as_mode("raw_bytes"))
    _remember_raw(raw, dtype)
    return raw
