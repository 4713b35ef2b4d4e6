"""fastsafetensors.common: the process group of one and small helpers its API exposes.

SafeTensorsMetadata and TensorFrame (upstream's header objects over its C++ buffers) are not
provided: header facts come from the loader (get_keys, get_shape, meta) instead.
"""

from __future__ import annotations

import logging
import os
from typing import Optional


class SingleGroup:
    """A process group of one: rank 0 of 1."""

    def rank(self) -> int:
        return 0

    def size(self) -> int:
        return 1


def init_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def is_gpu_found() -> bool:
    """True when the CUDA driver reports a device (warpload's own check, no torch needed)."""
    from .. import _warpload

    return bool(_warpload.cuda_available())


def get_device_numa_node(device: Optional[int]) -> Optional[int]:
    """The NUMA node of CUDA device `device` from sysfs, or None when unknown."""
    if device is None:
        return None
    try:
        import torch

        bus = torch.cuda.get_device_properties(device).pci_bus_id  # type: ignore[attr-defined]
    except Exception:  # no torch, no device, or a torch without pci_bus_id
        return None
    try:
        with open(f"/sys/bus/pci/devices/{str(bus).lower()}/numa_node") as f:
            node = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


def process_group(pg: object) -> object:
    """pg=None → SingleGroup(); anything with rank() and size() is used as is."""
    if pg is None:
        return SingleGroup()
    if not (callable(getattr(pg, "rank", None)) and callable(getattr(pg, "size", None))):
        raise TypeError("pg must have rank() and size() (a ProcessGroup or SingleGroup)")
    return pg


def debug_enabled() -> bool:
    return os.getenv("FASTSAFETENSORS_DEBUG", "false").lower() == "true"
