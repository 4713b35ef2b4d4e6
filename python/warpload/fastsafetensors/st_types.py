"""fastsafetensors.st_types: the device and dtype names its API takes.

DType values are the safetensors dtype strings; DType.AUTO means "keep the file's dtype".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional


class DeviceType(enum.Enum):
    CPU = "cpu"
    CUDA = "cuda"
    GPU = "gpu"  # paddle's name for a CUDA device


@dataclass(frozen=True)
class Device:
    type: DeviceType = DeviceType.CPU
    index: Optional[int] = None

    def as_str(self) -> str:
        return self.type.value if self.index is None else f"{self.type.value}:{self.index}"

    @classmethod
    def from_str(cls, s: str) -> "Device":
        """"cpu", "cuda", "cuda:N", "gpu:N"; ValueError names the part it cannot read."""
        kind, sep, index = s.partition(":")
        try:
            device_type = DeviceType(kind.lower())
        except ValueError:
            raise ValueError(f"Unknown device type: {kind}") from None
        if not sep:
            return cls(device_type, None)
        try:
            return cls(device_type, int(index))
        except ValueError:
            raise ValueError(f"Invalid index: {index}") from None


class DType(enum.Enum):
    BOOL = "BOOL"
    I8 = "I8"
    I16 = "I16"
    I32 = "I32"
    I64 = "I64"
    U8 = "U8"
    U16 = "U16"
    U32 = "U32"
    U64 = "U64"
    F16 = "F16"
    F32 = "F32"
    F64 = "F64"
    BF16 = "BF16"
    F8_E5M2 = "F8_E5M2"
    F8_E4M3 = "F8_E4M3"
    F8_E8M0 = "F8_E8M0"
    F4 = "F4"
    AUTO = "AUTO"


def to_device(device: Any) -> Device:
    """A Device for a Device, "cpu"/"cuda:N"/"gpu:N", an int N (CUDA) or a torch.device."""
    if isinstance(device, Device):
        return device
    if isinstance(device, int) and not isinstance(device, bool):
        return Device(DeviceType.CUDA, device)
    if device is None:
        return Device()
    parsed = Device.from_str(str(device))
    if parsed.type is DeviceType.CUDA and parsed.index is None and not isinstance(device, str):
        parsed = Device(DeviceType.CUDA, getattr(device, "index", None))
    return parsed


def device_name(device: Any) -> str:
    """warpload's device name ("cpu" or "cuda:N") for anything to_device() takes."""
    d = to_device(device)
    return "cpu" if d.type is DeviceType.CPU else f"cuda:{d.index or 0}"
