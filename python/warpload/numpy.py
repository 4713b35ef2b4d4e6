"""warpload.numpy: safetensors.numpy's loading functions, NumPy arrays out.

    from warpload.numpy import load_file, load     # was: from safetensors.numpy import ...
"""

from __future__ import annotations

from typing import Any, Dict

from . import _api

__all__ = ["load", "load_file"]


def load_file(filename: Any, **options: Any) -> Dict[str, Any]:
    """{name: numpy.ndarray} of a file (or directory, index, model id)."""
    return _api.load_file(filename, "cpu", framework="numpy", **options)


def load(data: bytes) -> Dict[str, Any]:
    """{name: numpy.ndarray} of a serialized file given as bytes."""
    return _api.load_bytes(data, "numpy")
