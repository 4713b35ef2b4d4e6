"""fastsafetensors.file_buffer: the loaded files of one copy_files_to_device().

Every getter exists in two forms, as upstream: `get_tensor`, `get_sharded` and
`push_tensor` return the framework's tensor; `get_tensor_wrapped`, `get_sharded_wrapped`,
`get_multi_cols` and `as_dict` return wrapped tensors (`TensorBase`: `.get_raw()`,
`.device`, `.dtype`). `device` and `dtype` arguments take fastsafetensors' `Device`/`DType`
or the framework's own (`"cuda:0"`, `torch.float16`); `DType.AUTO` keeps the file's dtype.

With more than one rank every call is collective (SPMD): each rank calls the same methods in
the same order. Tensors are zero-copy views that keep their memory alive: close() drops
warpload's references and never invalidates a tensor already returned; asking for a tensor
after close() raises ValueError.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .. import _tensors, _warpload
from .frameworks import FrameworkOpBase, TensorBase, track_closed, track_open
from .st_types import DType, device_name


class FilesBufferOnDevice:
    """Made by BaseSafeTensorsFileLoader.copy_files_to_device(); tensors on request."""

    def __init__(self, loader: Optional["_warpload._Loader"],
                 key_to_rank_lidx: Dict[str, Tuple[int, int]],
                 filenames: Dict[str, str], shapes: Dict[str, List[int]], pg: Any,
                 framework: FrameworkOpBase, kind: str,
                 distributed: Optional["_warpload._DistributedLoader"] = None) -> None:
        self._loader = loader
        self._distributed = distributed  # pg.size() > 1: every call below is collective
        self._target: Any = None  # device for distributed results (delivered in host memory)
        self.key_to_rank_lidx = key_to_rank_lidx
        self._filenames = filenames
        self._shapes = shapes
        self.pg = pg
        self.framework = framework
        self._kind = kind
        self._default_dtype: Any = None  # copy_files_to_device(dtype=...)
        held = loader.total_bytes if loader is not None else 0
        track_open(self, held)

    def close(self) -> None:
        """Drops warpload's buffers; tensors already returned stay valid. Idempotent."""
        if self._loader is not None:
            self._loader.release()
            self._loader = None
        if self._distributed is not None:
            self._distributed.release()
            self._distributed = None
        track_closed(self)

    @property
    def stats(self) -> Dict[str, Any]:
        """This rank's counters: bytes_read (from storage), bytes_sent / bytes_received (over
        the process group), direct_bytes (shards read under shared_storage)."""
        if self._distributed is not None:
            return dict(self._distributed.stats)
        return {"bytes_read": self._loader.total_bytes if self._loader is not None else 0,
                "bytes_sent": 0, "bytes_received": 0, "direct_bytes": 0}

    def get_filename(self, tensor_name: str) -> str:
        """The file holding tensor_name, or "" for a name in none of the files."""
        return self._filenames.get(tensor_name, "")

    def get_shape(self, tensor_name: str) -> List[int]:
        self._rank_of(tensor_name)
        return list(self._shapes[tensor_name])

    # -- wrapped results --
    def get_sharded_wrapped(self, tensor_name: str, dim: int, device: Any = None,
                            dtype: Any = DType.AUTO) -> TensorBase:
        """This rank's part of the tensor split along dim (fastsafetensors' rule: blocks of
        ceil(size / world)); dim -1 means the whole tensor (as get_tensor)."""
        return self.framework.wrap(self._sharded(tensor_name, dim, device, dtype))

    def get_tensor_wrapped(self, tensor_name: str, device: Any = None,
                           dtype: Any = DType.AUTO) -> TensorBase:
        return self.get_sharded_wrapped(tensor_name, -1, device, dtype)

    def get_multi_cols(self, tensor_names: List[str], dim: int, device: Any = None,
                       dtype: Any = DType.AUTO) -> TensorBase:
        """The shards of several tensors along dim, concatenated along dim."""
        parts = [self.framework.wrap(self._sharded(name, dim, None, None))
                 for name in tensor_names]
        joined = parts[0] if len(parts) == 1 else self.framework.concat_tensors(parts, dim)
        return self.framework.wrap(self._finish(joined.get_raw(), device, dtype))

    def as_dict(self, tensor_shard_dim: Dict[str, int]) -> Dict[str, TensorBase]:
        return {name: self.get_sharded_wrapped(name, dim)
                for name, dim in tensor_shard_dim.items()}

    # -- framework tensors --
    def get_sharded(self, tensor_name: str, dim: int, device: Any = None,
                    dtype: Any = DType.AUTO) -> Any:
        return self._sharded(tensor_name, dim, device, dtype)

    def get_tensor(self, tensor_name: str, device: Any = None, dtype: Any = DType.AUTO) -> Any:
        return self._sharded(tensor_name, -1, device, dtype)

    def push_tensor(self, tensor_name: str, dst_rank: int, device: Any = None,
                    dtype: Any = DType.AUTO) -> Any:
        """Sends the whole tensor to dst_rank only; returns it there and None elsewhere."""
        self._rank_of(tensor_name)
        if self.pg.size() == 1:
            return self.get_tensor(tensor_name, device, dtype)
        view = self._live_distributed().push(tensor_name, dst_rank)
        if view is None:
            return None
        return self._finish(_tensors.convert(view, self._kind),
                            device if device is not None else self._target, dtype)

    # -- internals --
    def _sharded(self, tensor_name: str, dim: int, device: Any, dtype: Any) -> Any:
        self._rank_of(tensor_name)
        rank, world = self.pg.rank(), self.pg.size()
        if self._distributed is not None or world > 1:
            dl = self._live_distributed()
            view = dl.tensor(tensor_name) if dim == -1 else dl.shard(tensor_name, dim)
            return self._finish(_tensors.convert(view, self._kind),
                                device if device is not None else self._target, dtype)
        loader = self._live_loader()
        if dim == -1 or world == 1:
            view = loader.tensor(tensor_name)
        else:
            view = loader.shard(tensor_name, rank, world, dim)
        return self._finish(_tensors.convert(view, self._kind), device, dtype)

    def _rank_of(self, tensor_name: str) -> int:
        try:
            return self.key_to_rank_lidx[tensor_name][0]
        except KeyError:
            raise ValueError(f"_get_rank: key {tensor_name} was not found in files") from None

    def _live_distributed(self) -> "_warpload._DistributedLoader":
        if self._distributed is None:
            raise ValueError("FilesBufferOnDevice is closed")
        return self._distributed

    def _live_loader(self) -> "_warpload._Loader":
        if self._loader is None:
            raise ValueError("FilesBufferOnDevice is closed")
        return self._loader

    def _finish(self, tensor: Any, device: Any, dtype: Any) -> Any:
        if dtype is None or dtype is DType.AUTO:
            dtype = self._default_dtype
        if dtype is DType.AUTO:
            dtype = None
        if device is None and dtype is None:
            return tensor
        wrapped = self.framework.wrap(tensor)
        return wrapped.to(device=None if device is None else device_name(device),
                          dtype=DType.AUTO if dtype is None else dtype).get_raw()
