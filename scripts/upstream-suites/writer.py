"""A small safetensors writer for the upstream suites' fixtures (warpload only reads).

Format: 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}, "__metadata__": {...}} padded with spaces to 8 bytes, then the data.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, Optional

_NUMPY = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16",
          "float16": "F16", "int32": "I32", "uint32": "U32", "float32": "F32",
          "float64": "F64", "int64": "I64", "uint64": "U64", "complex64": "C64"}
_TORCH = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16",
          "float16": "F16", "bfloat16": "BF16", "int32": "I32", "uint32": "U32",
          "float32": "F32", "float64": "F64", "int64": "I64", "uint64": "U64",
          "complex64": "C64", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
          "float8_e8m0fnu": "F8_E8M0", "float4_e2m1fn_x2": "F4"}


def _serialize(items: Dict[str, tuple], metadata: Optional[Dict[str, str]]) -> bytes:
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    blobs = []
    for name in sorted(items):
        dtype, shape, data = items[name]
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def _numpy_item(array: Any) -> tuple:
    import numpy as np

    a = np.ascontiguousarray(array)
    return _NUMPY[a.dtype.name], a.shape, a.tobytes()


def _torch_item(tensor: Any) -> tuple:
    import torch

    t = tensor.detach().cpu().contiguous()
    name = str(t.dtype).replace("torch.", "")
    raw = t.reshape(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)
    return _TORCH[name], tuple(t.shape), raw.numpy().tobytes()


def save_numpy(tensors: Dict[str, Any], metadata: Optional[Dict[str, str]] = None) -> bytes:
    return _serialize({k: _numpy_item(v) for k, v in tensors.items()}, metadata)


def save_file_numpy(tensors: Dict[str, Any], filename: Any,
                    metadata: Optional[Dict[str, str]] = None) -> None:
    with open(filename, "wb") as f:
        f.write(save_numpy(tensors, metadata))


def save_torch(tensors: Dict[str, Any], metadata: Optional[Dict[str, str]] = None) -> bytes:
    return _serialize({k: _torch_item(v) for k, v in tensors.items()}, metadata)


def save_file_torch(tensors: Dict[str, Any], filename: Any,
                    metadata: Optional[Dict[str, str]] = None) -> None:
    with open(filename, "wb") as f:
        f.write(save_torch(tensors, metadata))
