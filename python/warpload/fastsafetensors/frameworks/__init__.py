"""fastsafetensors.frameworks: wrapped tensors and the per-framework operations.

`TensorBase` is what fastsafetensors' *_wrapped methods return: `.get_raw()` is the
framework's tensor, `.device` a `Device`, `.dtype` a `DType`. `get_framework_op(name)`
gives the operations object ("pytorch"/"pt"/"torch", "numpy"/"np"). Upstream's paddle
support and its allocation of raw device buffers (alloc_tensor_memory, copy_tensor and the
rest built on its C++ gds_device_buffer) are not provided: warpload allocates its own.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..st_types import Device, DType

_live_bytes: Dict[int, int] = {}  # id(FilesBufferOnDevice) -> bytes it holds while open


def track_open(owner: object, nbytes: int) -> None:
    _live_bytes[id(owner)] = nbytes


def track_closed(owner: object) -> None:
    _live_bytes.pop(id(owner), None)


@dataclass
class TensorBase(abc.ABC):
    """A framework tensor with fastsafetensors' device and dtype names."""

    device: Device
    dtype: DType

    @abc.abstractmethod
    def get_raw(self) -> Any: ...

    @abc.abstractmethod
    def contiguous(self) -> "TensorBase": ...

    @abc.abstractmethod
    def to(self, device: Optional[Any] = None, dtype: Any = DType.AUTO) -> "TensorBase": ...

    @abc.abstractmethod
    def clone(self) -> "TensorBase": ...

    @abc.abstractmethod
    def detach(self) -> "TensorBase": ...

    @abc.abstractmethod
    def view(self, dtype: Any) -> "TensorBase": ...

    @abc.abstractmethod
    def __getitem__(self, index: Any) -> "TensorBase": ...

    def reshape(self, shape: List[int]) -> "TensorBase":
        raise NotImplementedError(f"{type(self).__name__} does not implement reshape()")

    def data_ptr(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} does not implement data_ptr()")


class ProcessGroupBase(abc.ABC):
    @abc.abstractmethod
    def size(self) -> int: ...

    @abc.abstractmethod
    def rank(self) -> int: ...


class FrameworkOpBase(abc.ABC):
    """What the fastsafetensors API needs from a framework."""

    @abc.abstractmethod
    def get_name(self) -> str: ...

    @abc.abstractmethod
    def wrap(self, tensor: Any) -> TensorBase: ...

    @abc.abstractmethod
    def is_equal(self, wrapped: Any, real: Any) -> bool: ...

    @abc.abstractmethod
    def concat_tensors(self, tensors: List[TensorBase], dim: int) -> TensorBase: ...

    def get_device(self, device: Any, pg: Any = None) -> Device:
        del pg
        from ..st_types import to_device

        return to_device(device)

    def set_device(self, device: Device) -> None:
        """Selects the current CUDA device for a CUDA Device (no-op otherwise)."""

    def get_process_group(self, pg: Any) -> Any:
        from ..common import process_group

        return process_group(pg)

    def get_mem_used(self) -> int:
        """Bytes warpload holds for FilesBufferOnDevice objects not yet closed (upstream
        counts its device buffers not yet freed). Tensors already returned are not counted:
        they own their memory and outlive close()."""
        return sum(_live_bytes.values())

    def support_fp8(self) -> bool:
        return False

    def get_cuda_ver(self) -> str:
        return "0.0"


def get_framework_op(name: str) -> FrameworkOpBase:
    if name in ("pytorch", "pt", "torch"):
        from ._torch import TorchOp

        return TorchOp()
    if name in ("numpy", "np"):
        from ._numpy import NumpyOp

        return NumpyOp()
    raise Exception(f"Unknown framework name: {name}; use 'pytorch' or 'numpy'")
