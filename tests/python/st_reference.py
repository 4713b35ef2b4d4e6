"""An independent safetensors writer and reader for the Python tests.

Plain struct + json + bytes: no warpload, no torch, no safetensors. The writer can also make
the files the reference writer never does (unpadded headers, misaligned offsets, leading
whitespace, sparse data sections) and, with `raw_header`, any malformed file.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, List, Optional, Sequence, Tuple

# dtype -> bits per element (the format's table)
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32,
    "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64, "C64": 64,
    "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


def nbytes_of(dtype: str, shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    bits = n * DTYPE_BITS[dtype]
    assert bits % 8 == 0, (dtype, shape)
    return bits // 8


Tensor = Tuple[str, str, List[int], bytes]  # name, dtype, shape, bytes


def write(path: str, tensors: Sequence[Tensor], metadata: Optional[Dict[str, str]] = None,
          *, align: int = 8, leading_ws: int = 0, gap_before: Optional[Dict[str, int]] = None
          ) -> None:
    """Writes tensors in the given order. `align` pads 8 + N to a multiple (1 = unpadded);
    `gap_before` inserts filler bytes before a tensor (the file is then invalid)."""
    header: Dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    chunks = []
    for name, dtype, shape, data in tensors:
        assert len(data) == nbytes_of(dtype, shape), name
        filler = (gap_before or {}).get(name, 0)
        if filler:
            chunks.append(b"\0" * filler)
            offset += filler
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = " " * leading_ws + json.dumps(header, separators=(",", ":"))
    raw = text.encode()
    pad = (-(8 + len(raw))) % align
    raw += b" " * pad
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for c in chunks:
            f.write(c)


def write_raw(path: str, header: bytes, data: bytes = b"", length: Optional[int] = None) -> None:
    """A file with exactly this header text (and length prefix, unless `length` overrides)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header) if length is None else length))
        f.write(header)
        f.write(data)


def write_sparse(path: str, tensors: Sequence[Tuple[str, str, List[int]]]) -> int:
    """A valid file whose data section is a hole (reads as zeros, costs no disk)."""
    header = {}
    offset = 0
    for name, dtype, shape in tensors:
        n = nbytes_of(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * ((-(8 + len(raw))) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + offset)
    return offset


def read(path: str) -> Tuple[Dict[str, Tuple[str, List[int], bytes]], Optional[Dict[str, str]]]:
    """{name: (dtype, shape, bytes)} and the metadata map (None when absent)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode())
    base = 8 + n
    metadata = header.pop("__metadata__", None)
    out = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        out[name] = (entry["dtype"], list(entry["shape"]), blob[base + begin:base + end])
    return out, metadata


def read_many(paths: Sequence[str]) -> Dict[str, Tuple[str, List[int], bytes]]:
    merged: Dict[str, Tuple[str, List[int], bytes]] = {}
    for p in paths:
        merged.update(read(p)[0])
    return merged


def random_bytes(rng, dtype: str, shape: Sequence[int]) -> bytes:
    n = nbytes_of(dtype, shape)
    if dtype == "BOOL":
        return bytes(rng.integers(0, 2, size=n, dtype="uint8"))
    return rng.bytes(n)


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
