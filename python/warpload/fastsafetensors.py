"""Drop-in for the fastsafetensors API (IBM), on warpload's engine.

    from warpload.fastsafetensors import SafeTensorsFileLoader, SingleGroup
    loader = SafeTensorsFileLoader(SingleGroup(), "cpu", nogds=True)
    loader.add_filenames({0: ["a.safetensors", "b.safetensors"]})   # {rank: files}
    fb = loader.copy_files_to_device()
    a0 = fb.get_tensor("a0")
    fb.close(); loader.close()

Same class and function names, signatures and defaults as fastsafetensors. How its options
map onto warpload:
  nogds=False          "gds" when that backend is available and the device is CUDA, else the
                       settings file's backend, else "auto"; nogds=True never uses "gds"
  copier_type="3fs",   the "3fs" (USRBIO) backend; ThreeFSLoader's mount_point is passed on
  ThreeFSLoader
  max_threads          storage threads (the default 16 means warpload's own default)
  bbuf_size_kb         pinned staging bytes for CUDA loads (the default means warpload's own)
  set_numa, disable_cache, debug_log, use_buf_register, max_copy_block_size, queue_size,
  max_concurrent_producers
                       accepted; warpload decides these itself
  backend, threads, block_size, queue_depth, direct, config, use_config, staging_bytes,
  mount_point          warpload options, applied
  anything else        accepted with a warning, as fastsafetensors passes it to its copier
pg: SingleGroup, None, or a torch.distributed ProcessGroup (a subgroup works: ranks are the
group's). With more than one rank, every rank must call add_filenames() with the same
{rank: files} and then the methods of FilesBufferOnDevice in the same order (SPMD, as
fastsafetensors requires). copy_files_to_device() reads 1/world of the bytes of all the files
on each rank (split by bytes, not by the {rank: files} assignment), and each call moves only
what the caller needs: get_tensor() broadcasts the pieces from the ranks that read them,
get_sharded() sends each rank its own block only (fastsafetensors' split rule), push_tensor()
sends to one rank. shared_storage=True (ranks on one node) lets a rank read a dim-0 shard
itself instead (docs/distributed.md). fb.stats counts the bytes read and moved.

Tensors are zero-copy views that keep their buffer alive: unlike fastsafetensors, close()
never invalidates a tensor already returned (it drops warpload's references; the memory goes
when the last tensor does). Reading a tensor again after close() raises ValueError.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from . import _api, _tensors, _warpload
from ._progress import Progress

__all__ = [
    "BaseSafeTensorsFileLoader",
    "FilesBufferOnDevice",
    "ParallelLoader",
    "SafeTensorsFileLoader",
    "SingleGroup",
    "ThreeFSLoader",
    "fastsafe_open",
]

logger = logging.getLogger(__name__)

_WARPLOAD_OPTIONS = ("backend", "threads", "block_size", "queue_depth", "direct", "config",
                     "use_config", "staging_bytes", "mount_point")
# fastsafetensors options with no warpload counterpart: accepted silently.
_IGNORED_OPTIONS = ("max_pinned_memory_in_kb", "use_shm", "cache", "auto_mem_delete")
_DEFAULT_THREADS = 16
_DEFAULT_BBUF_KB = 16 * 1024


class SingleGroup:
    """A process group of one: rank 0 of 1."""

    def rank(self) -> int:
        return 0

    def size(self) -> int:
        return 1


def _process_group(pg: Any) -> Any:
    if pg is None:
        return SingleGroup()
    if not (callable(getattr(pg, "rank", None)) and callable(getattr(pg, "size", None))):
        raise TypeError("pg must have rank() and size() (a ProcessGroup or SingleGroup)")
    return pg


def _framework_kind(framework: str) -> str:
    kind = _tensors.framework_kind(framework)
    if kind == "dlpack":
        raise ValueError(f"framework '{framework}' is not supported; use 'pytorch' or 'numpy'")
    return kind


def _split_options(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    options = {k: kwargs[k] for k in _WARPLOAD_OPTIONS if k in kwargs}
    unknown = sorted(k for k in kwargs if k not in _WARPLOAD_OPTIONS and k not in _IGNORED_OPTIONS)
    if unknown:
        warnings.warn(f"warpload.fastsafetensors: ignoring option(s) {', '.join(unknown)}",
                      stacklevel=3)
    return options


def _backend_for(copier_type: str, device: str, options: Dict[str, Any]) -> Optional[str]:
    if options.get("backend"):
        return options["backend"]
    if copier_type == "3fs":
        return "3fs"
    if copier_type == "gds":
        if device.startswith("cuda") and "gds" in _warpload.available_backends():
            return "gds"
        return None
    if copier_type == "nogds":
        resolved = _warpload.resolved_backend(
            "", os.fspath(options.get("config") or ""), bool(options.get("use_config", True)))
        return "auto" if resolved == "gds" else None
    raise ValueError(f"unknown copier type '{copier_type}' (gds, nogds, 3fs)")


class FilesBufferOnDevice:
    """Loaded files of one copy_files_to_device(); tensors are instantiated on request."""

    def __init__(self, loader: Optional["_warpload._Loader"],
                 key_to_rank_lidx: Dict[str, Tuple[int, int]],
                 filenames: Dict[str, str], shapes: Dict[str, List[int]], pg: Any,
                 kind: str, distributed: Optional["_warpload._DistributedLoader"] = None) -> None:
        self._loader = loader
        self._distributed = distributed  # pg.size() > 1: every call below is collective
        self._target: Any = None  # device for distributed results (delivered in host memory)
        self.key_to_rank_lidx = key_to_rank_lidx
        self._filenames = filenames
        self._shapes = shapes
        self.pg = pg
        self._kind = kind
        self._default_dtype: Any = None  # copy_files_to_device(dtype=...)

    def close(self) -> None:
        """Drops warpload's buffers; tensors already returned stay valid."""
        if self._loader is not None:
            self._loader.release()
            self._loader = None
        if self._distributed is not None:
            self._distributed.release()
            self._distributed = None

    @property
    def stats(self) -> Dict[str, Any]:
        """This rank's counters: bytes_read (from storage), bytes_sent / bytes_received (over
        the process group), direct_bytes (shards read under shared_storage)."""
        if self._distributed is not None:
            return dict(self._distributed.stats)
        return {"bytes_read": self._loader.total_bytes if self._loader is not None else 0,
                "bytes_sent": 0, "bytes_received": 0, "direct_bytes": 0}

    def get_filename(self, tensor_name: str) -> Optional[str]:
        return self._filenames.get(tensor_name)

    def get_shape(self, tensor_name: str) -> List[int]:
        self._rank_of(tensor_name)
        return list(self._shapes[tensor_name])

    def get_tensor(self, tensor_name: str, device: Any = None, dtype: Any = None) -> Any:
        return self.get_sharded(tensor_name, -1, device, dtype)

    def get_sharded(self, tensor_name: str, dim: int, device: Any = None,
                    dtype: Any = None) -> Any:
        """This rank's part of the tensor split along dim (fastsafetensors' rule: blocks of
        ceil(size / world)); dim -1 means the whole tensor (as get_tensor)."""
        owner = self._rank_of(tensor_name)
        rank, world = self.pg.rank(), self.pg.size()
        if self._distributed is not None or world > 1:
            dl = self._live_distributed()
            view = dl.tensor(tensor_name) if dim == -1 else dl.shard(tensor_name, dim)
            return self._finish(_tensors.convert(view, self._kind),
                                device if device is not None else self._target, dtype)
        del owner
        loader = self._live_loader()
        if dim == -1 or world == 1:
            view = loader.tensor(tensor_name)
        else:
            view = loader.shard(tensor_name, rank, world, dim)
        return self._finish(_tensors.convert(view, self._kind), device, dtype)

    def push_tensor(self, tensor_name: str, dst_rank: int, device: Any = None,
                    dtype: Any = None) -> Any:
        """Sends the whole tensor to dst_rank only; returns it there and None elsewhere."""
        self._rank_of(tensor_name)
        if self.pg.size() == 1:
            return self.get_tensor(tensor_name, device, dtype)
        view = self._live_distributed().push(tensor_name, dst_rank)
        if view is None:
            return None
        return self._finish(_tensors.convert(view, self._kind),
                            device if device is not None else self._target, dtype)

    def get_multi_cols(self, tensor_names: List[str], dim: int, device: Any = None,
                       dtype: Any = None) -> Any:
        parts = [self.get_sharded(name, dim) for name in tensor_names]
        if len(parts) == 1:
            return self._finish(parts[0], device, dtype)
        if self._kind == "torch":
            import torch

            return self._finish(torch.cat(parts, dim=dim), device, dtype)
        import numpy as np

        return np.concatenate(parts, axis=dim)

    def as_dict(self, tensor_shard_dim: Dict[str, int]) -> Dict[str, Any]:
        return {name: self.get_sharded(name, dim) for name, dim in tensor_shard_dim.items()}

    def _rank_of(self, tensor_name: str) -> int:
        try:
            return self.key_to_rank_lidx[tensor_name][0]
        except KeyError:
            raise ValueError(f"key {tensor_name} was not found in files") from None

    def _live_distributed(self) -> "_warpload._DistributedLoader":
        if self._distributed is None:
            raise ValueError("FilesBufferOnDevice is closed")
        return self._distributed

    def _live_loader(self) -> "_warpload._Loader":
        if self._loader is None:
            raise ValueError("FilesBufferOnDevice is closed")
        return self._loader

    def _finish(self, tensor: Any, device: Any, dtype: Any) -> Any:
        if dtype is None:
            dtype = self._default_dtype
        if dtype is not None and getattr(dtype, "name", None) == "AUTO":
            dtype = None
        if self._kind != "torch" or (device is None and dtype is None):
            return tensor
        import torch

        target = torch.device(device) if device is not None else tensor.device
        if target != tensor.device or (dtype is not None and dtype != tensor.dtype):
            tensor = tensor.to(device=target, dtype=dtype)
        return tensor


class BaseSafeTensorsFileLoader:
    """Loads .safetensors files registered per rank; copier_type "gds", "nogds" or "3fs"."""

    def __init__(self, pg: Optional[Any], device: Any, copier_type: str,
                 set_numa: bool = True, disable_cache: bool = True,
                 framework: str = "pytorch", **kwargs: Any) -> None:
        del set_numa, disable_cache  # warpload never pins NUMA nodes or caches tensors
        self.pg = _process_group(pg)
        self.device = _api.device_name(device)
        self._kind = _framework_kind(framework)
        self._shared_storage = bool(kwargs.pop("shared_storage", False))
        self._options = _split_options(kwargs)
        self._options["backend"] = _backend_for(copier_type, self.device, self._options)
        self.meta: Dict[str, Tuple[Any, int]] = {}  # path -> (header plan entry, rank)
        self.frames: Dict[str, List[int]] = {}      # tensor name -> shape

    def reset(self) -> None:
        self.meta = {}
        self.frames = {}

    def close(self) -> None:
        self.reset()

    def get_keys(self) -> List[str]:
        return list(self.frames.keys())

    def get_shape(self, tensor_name: str) -> List[int]:
        return list(self.frames[tensor_name])

    def add_filenames(self, filenames: Dict[int, List[str]]) -> None:
        """Registers files per rank; headers are read and validated now."""
        for rank, files in filenames.items():
            for path in files:
                header = _warpload._Loader(use_config=False)
                header.add(os.fspath(path))
                entry = header.plan()[0]
                self.meta[os.fspath(path)] = (entry, rank)
                for name, _dtype, shape, _begin, _end in entry[1]:
                    self.frames[name] = list(shape)
                logger.debug("add_filenames %d: path=%s", len(self.meta), path)

    def copy_files_to_device(self, dtype: Any = None, use_buf_register: bool = True,
                             max_copy_block_size: int = 16 * 1024 * 1024 * 1024
                             ) -> FilesBufferOnDevice:
        """Loads this rank's files (one parallel load) and returns their buffer."""
        del use_buf_register, max_copy_block_size
        rank = self.pg.rank()
        key_to_rank_lidx: Dict[str, Tuple[int, int]] = {}
        filenames: Dict[str, str] = {}
        shapes: Dict[str, List[int]] = {}
        mine: List[str] = []
        lidx_of_rank: Dict[int, int] = {}
        for path, (entry, owner) in sorted(self.meta.items(), key=lambda item: item[0]):
            lidx = lidx_of_rank.get(owner, 0)
            lidx_of_rank[owner] = lidx + 1
            for name, _dtype, shape, _begin, _end in entry[1]:
                if name in key_to_rank_lidx:
                    raise ValueError(f"{path}: tensor '{name}' is also in {filenames[name]}")
                key_to_rank_lidx[name] = (owner, lidx)
                filenames[name] = path
                shapes[name] = list(shape)
            if owner == rank:
                mine.append(path)
        loader = None
        distributed = None
        if self.pg.size() > 1:
            from . import _distributed

            if not _distributed.is_torch_group(self.pg):
                raise TypeError("pg.size() > 1 needs a torch.distributed ProcessGroup "
                                "(init_process_group first)")
            # Every file, in fastsafetensors' (sorted) order, read 1/world per rank.
            paths = [path for path, _ in sorted(self.meta.items(), key=lambda item: item[0])]
            options = dict(self._options)
            if options.get("backend") == "gds":
                options["backend"] = None  # host-memory delivery; GDS reads device memory
            distributed = _distributed.make_loader(paths, self.pg, options,
                                                   shared_storage=self._shared_storage)
            distributed.load(on_request=True)
        elif mine:
            loader = _api.make_loader(mine, self.device, self._kind, dict(self._options))
            _api.run_load(loader, False, "warpload")
        fb = FilesBufferOnDevice(loader, key_to_rank_lidx, filenames, shapes, self.pg,
                                 self._kind, distributed)
        if distributed is not None and self.device != "cpu":
            fb._target = self.device
        if dtype is not None and getattr(dtype, "name", None) != "AUTO":
            fb._default_dtype = dtype  # converts on get_tensor, as fastsafetensors' wait_io
        return fb


class SafeTensorsFileLoader(BaseSafeTensorsFileLoader):
    """fastsafetensors.SafeTensorsFileLoader."""

    def __init__(self, pg: Optional[Any], device: Any = "cpu", bbuf_size_kb: int = 16 * 1024,
                 max_threads: int = 16, nogds: bool = False, set_numa: bool = True,
                 disable_cache: bool = True, debug_log: bool = False,
                 framework: str = "pytorch", **kwargs: Any) -> None:
        if debug_log:
            logger.setLevel(logging.DEBUG)
        if max_threads != _DEFAULT_THREADS and "threads" not in kwargs:
            kwargs["threads"] = max_threads
        if bbuf_size_kb != _DEFAULT_BBUF_KB and "staging_bytes" not in kwargs:
            kwargs["staging_bytes"] = bbuf_size_kb * 1024
        super().__init__(pg, device, "nogds" if nogds else "gds", set_numa, disable_cache,
                         framework, **kwargs)


class ThreeFSLoader(BaseSafeTensorsFileLoader):
    """fastsafetensors.threefs_loader.ThreeFSLoader: the "3fs" backend."""

    def __init__(self, pg: Optional[Any], device: Any = "cpu", mount_point: str = "/mnt/3fs",
                 debug_log: bool = False, disable_cache: bool = True,
                 framework: str = "pytorch", **kwargs: Any) -> None:
        if debug_log:
            logger.setLevel(logging.DEBUG)
        kwargs.setdefault("mount_point", mount_point)
        super().__init__(pg, device, "3fs", True, disable_cache, framework, **kwargs)


class fastsafe_open:  # noqa: N801 - fastsafetensors' name
    """Opens files (a path, a list, or {rank: [paths]}) and serves their tensors."""

    def __init__(self, filenames: Union[str, List[str], Dict[int, List[str]]],
                 framework: str = "pt", pg: Optional[Any] = None, device: str = "cpu",
                 nogds: bool = False, debug_log: bool = False,
                 max_copy_block_size: int = 16 * 1024 * 1024 * 1024) -> None:
        self.loader = SafeTensorsFileLoader(pg, device, nogds=nogds, debug_log=debug_log,
                                            framework=framework)
        if isinstance(filenames, (str, os.PathLike)):
            file_dict: Dict[int, List[str]] = {0: [os.fspath(filenames)]}
        elif isinstance(filenames, dict):
            file_dict = filenames
        else:
            file_dict = {0: list(filenames)}
        self.loader.add_filenames(file_dict)
        self.fb: Optional[FilesBufferOnDevice] = self.loader.copy_files_to_device(
            max_copy_block_size=max_copy_block_size)

    def metadata(self) -> Dict[str, Dict[str, str]]:
        return {path: dict(entry[2]) for path, (entry, _rank) in self.loader.meta.items()}

    def keys(self) -> List[str]:
        return list(self._fb().key_to_rank_lidx.keys())

    def get_tensor(self, name: str) -> Any:
        return self._fb().get_tensor(name)

    def _fb(self) -> FilesBufferOnDevice:
        if self.fb is None:
            raise ValueError("fastsafe_open is closed")
        return self.fb

    def __enter__(self) -> "fastsafe_open":
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        if self.fb is not None:
            self.fb.close()
            self.fb = None
        self.loader.close()


class ParallelLoader:
    """Yields (name, tensor) over many files, pg.size() files per batch (one per rank)."""

    def __init__(self, pg: Optional[Any], hf_weights_files: List[str],
                 max_concurrent_producers: int = 1, queue_size: int = 0,
                 use_tqdm_on_load: bool = True, device: str = "cpu",
                 bbuf_size_kb: int = 16 * 1024, max_threads: int = 16, nogds: bool = False,
                 set_numa: bool = True, debug_log: bool = False, framework: str = "pytorch",
                 **kwargs: Any) -> None:
        del max_concurrent_producers, queue_size  # one batch at a time
        self.pg = _process_group(pg)
        self.hf_weights_files = list(hf_weights_files)
        self.use_tqdm_on_load = use_tqdm_on_load
        self.loader = SafeTensorsFileLoader(
            self.pg, device, bbuf_size_kb=bbuf_size_kb, max_threads=max_threads, nogds=nogds,
            set_numa=set_numa, disable_cache=True, debug_log=debug_log, framework=framework,
            **kwargs)

    def iterate_weights(self) -> Iterator[Tuple[str, Any]]:
        size = self.pg.size()
        batches = [self.hf_weights_files[i:i + size]
                   for i in range(0, len(self.hf_weights_files), size)]
        show = None if self.use_tqdm_on_load and self.pg.rank() == 0 else False
        bar = Progress(show, len(batches), "Loading safetensors checkpoint shards")
        try:
            for done, batch in enumerate(batches, start=1):
                self.loader.add_filenames({i: [f] for i, f in enumerate(batch)})
                fb = self.loader.copy_files_to_device()
                self.loader.reset()
                try:
                    for key in list(fb.key_to_rank_lidx.keys()):
                        yield key, fb.get_tensor(key)
                finally:
                    fb.close()
                if bar.active:
                    bar(done, len(batches))
        finally:
            bar.close()

    def close(self) -> None:
        self.loader.close()
