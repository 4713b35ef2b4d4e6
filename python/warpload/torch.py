"""warpload.torch: safetensors.torch's loading functions, torch tensors out.

    from warpload.torch import load_file, load     # was: from safetensors.torch import ...
    tensors = load_file("model.safetensors", device="cuda:0")
    tensors = load(data)                           # data: the bytes of a .safetensors file
"""

from __future__ import annotations

from typing import Any, Dict

from . import _api

__all__ = ["load", "load_file"]


def load_file(filename: Any, device: Any = "cpu", **options: Any) -> Dict[str, Any]:
    """{name: torch.Tensor} of a file (or directory, index, model id); warpload's options
    (backend="mmap"/"pread"/..., threads, progress, ...) as warpload.load_file."""
    return _api.load_file(filename, device, framework="pt", **options)


def load(data: bytes, device: Any = "cpu") -> Dict[str, Any]:
    """{name: torch.Tensor} of a serialized file given as bytes."""
    return _api.load_bytes(data, "pt", device)
