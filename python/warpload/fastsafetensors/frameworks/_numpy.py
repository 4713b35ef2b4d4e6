"""fastsafetensors.frameworks._numpy: NumPy arrays behind TensorBase (host memory only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from ..st_types import Device, DType
from . import FrameworkOpBase, TensorBase

dtype_convert: Dict[DType, Any] = {
    DType.BOOL: np.dtype(np.bool_), DType.U8: np.dtype(np.uint8), DType.I8: np.dtype(np.int8),
    DType.I16: np.dtype(np.int16), DType.I32: np.dtype(np.int32),
    DType.I64: np.dtype(np.int64), DType.U16: np.dtype(np.uint16),
    DType.U32: np.dtype(np.uint32), DType.U64: np.dtype(np.uint64),
    DType.F16: np.dtype(np.float16), DType.F32: np.dtype(np.float32),
    DType.F64: np.dtype(np.float64),
}
dtype_reverse = {v: k for k, v in dtype_convert.items()}


def numpy_dtype(dtype: Any) -> Optional[Any]:
    if dtype is None or dtype is DType.AUTO:
        return None
    if isinstance(dtype, DType):
        if dtype not in dtype_convert:
            raise ValueError(f"NumPy has no dtype for {dtype.value}")
        return dtype_convert[dtype]
    return np.dtype(dtype)


@dataclass
class NumpyTensor(TensorBase):
    real_tensor: np.ndarray

    @classmethod
    def of(cls, a: np.ndarray) -> "NumpyTensor":
        return cls(Device(), dtype_reverse.get(a.dtype, DType.U8), a)

    def get_raw(self) -> np.ndarray:
        return self.real_tensor

    def contiguous(self) -> "NumpyTensor":
        return NumpyTensor.of(np.ascontiguousarray(self.real_tensor))

    def to(self, device: Optional[Any] = None, dtype: Any = DType.AUTO) -> "NumpyTensor":
        if device is not None and str(getattr(device, "as_str", lambda: device)()) != "cpu":
            raise ValueError("NumPy arrays live in host memory; device must be 'cpu'")
        target = numpy_dtype(dtype)
        if target is None or target == self.real_tensor.dtype:
            return self
        return NumpyTensor.of(self.real_tensor.astype(target))

    def clone(self) -> "NumpyTensor":
        return NumpyTensor.of(self.real_tensor.copy())

    def detach(self) -> "NumpyTensor":
        return self

    def view(self, dtype: Any) -> "NumpyTensor":
        return NumpyTensor.of(self.real_tensor.view(numpy_dtype(dtype)))

    def __getitem__(self, index: Any) -> "NumpyTensor":
        return NumpyTensor.of(self.real_tensor[index])

    def reshape(self, shape: List[int]) -> "NumpyTensor":
        return NumpyTensor.of(self.real_tensor.reshape(shape))

    def data_ptr(self) -> int:
        return int(self.real_tensor.ctypes.data)


class NumpyOp(FrameworkOpBase):
    def get_name(self) -> str:
        return "numpy"

    def wrap(self, tensor: Any) -> NumpyTensor:
        return NumpyTensor.of(tensor)

    def is_equal(self, wrapped: Any, real: Any) -> bool:
        left = wrapped.get_raw() if isinstance(wrapped, TensorBase) else wrapped
        return bool(np.array_equal(left, np.asarray(real)))

    def concat_tensors(self, tensors: List[TensorBase], dim: int) -> NumpyTensor:
        return NumpyTensor.of(np.concatenate([t.get_raw() for t in tensors], axis=dim))
