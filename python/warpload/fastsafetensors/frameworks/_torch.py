"""fastsafetensors.frameworks._torch: PyTorch tensors behind TensorBase."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch

from ..st_types import Device, DeviceType, DType, to_device
from . import FrameworkOpBase, TensorBase

dtype_convert: Dict[DType, Any] = {
    DType.BOOL: torch.bool, DType.U8: torch.uint8, DType.I8: torch.int8,
    DType.I16: torch.int16, DType.I32: torch.int32, DType.I64: torch.int64,
    DType.F16: torch.float16, DType.BF16: torch.bfloat16, DType.F32: torch.float32,
    DType.F64: torch.float64,
}
for _dtype, _attr in ((DType.U16, "uint16"), (DType.U32, "uint32"), (DType.U64, "uint64"),
                      (DType.F8_E5M2, "float8_e5m2"), (DType.F8_E4M3, "float8_e4m3fn"),
                      (DType.F8_E8M0, "float8_e8m0fnu"), (DType.F4, "float4_e2m1fn_x2")):
    if hasattr(torch, _attr):
        dtype_convert[_dtype] = getattr(torch, _attr)
dtype_reverse: Dict[Any, DType] = {v: k for k, v in dtype_convert.items()}


def torch_dtype(dtype: Any) -> Optional[Any]:
    """A torch dtype for a DType (None for AUTO) or a torch dtype."""
    if dtype is None or dtype is DType.AUTO:
        return None
    if isinstance(dtype, DType):
        if dtype not in dtype_convert:
            raise ValueError(f"torch {torch.__version__} has no dtype for {dtype.value}")
        return dtype_convert[dtype]
    return dtype


def _device_of(t: torch.Tensor) -> Device:
    if t.device.type == "cuda":
        return Device(DeviceType.CUDA, t.device.index)
    return Device(DeviceType.CPU, None)


@dataclass
class TorchTensor(TensorBase):
    real_tensor: torch.Tensor

    @classmethod
    def of(cls, t: torch.Tensor) -> "TorchTensor":
        return cls(_device_of(t), dtype_reverse.get(t.dtype, DType.U8), t)

    def get_raw(self) -> torch.Tensor:
        return self.real_tensor

    def contiguous(self) -> "TorchTensor":
        return TorchTensor.of(self.real_tensor.contiguous())

    def to(self, device: Optional[Any] = None, dtype: Any = DType.AUTO) -> "TorchTensor":
        target = torch_dtype(dtype)
        dev = None if device is None else to_device(device).as_str()
        if dev is None and (target is None or target == self.real_tensor.dtype):
            return self
        return TorchTensor.of(self.real_tensor.to(device=dev, dtype=target))

    def clone(self) -> "TorchTensor":
        return TorchTensor.of(self.real_tensor.clone())

    def detach(self) -> "TorchTensor":
        return TorchTensor.of(self.real_tensor.detach())

    def view(self, dtype: Any) -> "TorchTensor":
        return TorchTensor.of(self.real_tensor.view(torch_dtype(dtype)))

    def __getitem__(self, index: Any) -> "TorchTensor":
        return TorchTensor.of(self.real_tensor[index])

    def reshape(self, shape: List[int]) -> "TorchTensor":
        return TorchTensor.of(self.real_tensor.reshape(shape))

    def data_ptr(self) -> int:
        return int(self.real_tensor.data_ptr())


class TorchOp(FrameworkOpBase):
    def get_name(self) -> str:
        return "pytorch"

    def wrap(self, tensor: Any) -> TorchTensor:
        return TorchTensor.of(tensor)

    def is_equal(self, wrapped: Any, real: Any) -> bool:
        left = wrapped.get_raw() if isinstance(wrapped, TensorBase) else wrapped
        if not isinstance(real, torch.Tensor):
            raise TypeError(f"is_equal compares with a torch.Tensor, not {type(real).__name__}")
        return bool(torch.equal(left.cpu(), real.cpu()))

    def concat_tensors(self, tensors: List[TensorBase], dim: int) -> TorchTensor:
        return TorchTensor.of(torch.cat([t.get_raw() for t in tensors], dim=dim))

    def set_device(self, device: Device) -> None:
        if device.type is DeviceType.CUDA and torch.cuda.is_available():
            torch.cuda.set_device(device.index or 0)

    def get_empty_tensor(self, shape: List[int], dtype: DType, device: Device) -> TorchTensor:
        return TorchTensor.of(torch.empty(shape, dtype=torch_dtype(dtype),
                                          device=to_device(device).as_str()))

    def randn(self, shape: Any, device: Device, dtype: DType = DType.F32) -> TorchTensor:
        return TorchTensor.of(torch.randn(shape, dtype=torch_dtype(dtype),
                                          device=to_device(device).as_str()))

    def support_fp8(self) -> bool:
        return DType.F8_E4M3 in dtype_convert

    def get_cuda_ver(self) -> str:
        version = getattr(torch.version, "cuda", None)
        return f"cuda-{version}" if version else "0.0"
