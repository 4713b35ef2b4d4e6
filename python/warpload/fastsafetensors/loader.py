"""fastsafetensors.loader: SafeTensorsFileLoader, BaseSafeTensorsFileLoader, fastsafe_open.

    from warpload.fastsafetensors import SafeTensorsFileLoader, SingleGroup
    loader = SafeTensorsFileLoader(SingleGroup(), "cpu", nogds=True)
    loader.add_filenames({0: ["a.safetensors", "b.safetensors"]})   # {rank: files}
    fb = loader.copy_files_to_device()
    a0 = fb.get_tensor("a0")
    fb.close(); loader.close()

Same names, signatures and defaults as fastsafetensors. The copier type (copier/builtin.py)
chooses warpload's storage backend: nogds=False is "gds", nogds=True is "nogds",
ThreeFSLoader is "3fs". Files may also be directories, index files or Hugging Face model ids
(`org/name[@revision]` from the local cache), each expanding to its shards.

pg: SingleGroup, None (a group of one) or a torch.distributed ProcessGroup (a subgroup
works: ranks are the group's). With more than one rank, every rank calls add_filenames()
with the same {rank: files} and then the FilesBufferOnDevice methods in the same order (SPMD).
copy_files_to_device() then reads 1/world of all the files' bytes on each rank (split by
bytes, not by the {rank: files} assignment); get_tensor() broadcasts the pieces,
get_sharded() sends each rank only its block, push_tensor() sends to one rank.
shared_storage=True (ranks on one node) lets a rank read a dim-0 shard itself
(docs/distributed.md); fb.stats counts the bytes read and moved.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .. import _api, _backends, _tensors, _warpload
from .common import SingleGroup, init_logger
from .copier import CopierType, WarploadCopierConstructor, create_copier_constructor
from .file_buffer import FilesBufferOnDevice
from .frameworks import TensorBase, get_framework_op
from .st_types import DType, device_name, to_device

__all__ = ["BaseSafeTensorsFileLoader", "SafeTensorsFileLoader", "SingleGroup",
           "fastsafe_open"]

logger = init_logger(__name__)


def _framework_kind(framework: str) -> str:
    kind = _tensors.framework_kind(framework)
    if kind == "dlpack":
        raise ValueError(f"framework '{framework}' is not supported; use 'pytorch' or 'numpy'")
    return kind


class BaseSafeTensorsFileLoader:
    """Loads .safetensors files registered per rank, reading them as `copier_type` says
    (a name in the copier registry: "gds", "nogds", "3fs")."""

    @classmethod
    def process_extension_config(cls, ext_config: Mapping[str, Any],
                                 **kwargs: Any) -> Dict[str, Any]:
        """Keyword arguments of __init__ from a settings-file section (AutoLoader): a copy.
        `kwargs` carries the call's context (hf_weights_files)."""
        del kwargs
        return dict(ext_config)

    def __init__(self, pg: Optional[Any], device: Any, copier_type: CopierType,
                 set_numa: bool = True, disable_cache: bool = True,
                 framework: str = "pytorch", **kwargs: Any) -> None:
        del set_numa  # warpload never pins threads to NUMA nodes
        self.framework = get_framework_op(framework)
        self._kind = _framework_kind(framework)
        self.pg = self.framework.get_process_group(pg)
        self.device = to_device(device)
        self._device = device_name(device)
        self.disable_cache = disable_cache
        self._shared_storage = bool(kwargs.pop("shared_storage", False))
        self.meta: Dict[str, Tuple[Any, int]] = {}  # path -> (header plan entry, rank)
        self.frames: Dict[str, List[int]] = {}      # tensor name -> shape
        self.copier_constructor: Any = create_copier_constructor(
            copier_type=copier_type, device=self.device, framework=self.framework, **kwargs)

    def reset(self) -> None:
        self.meta = {}
        self.frames = {}

    def close(self) -> None:
        self.reset()
        self.copier_constructor = None

    def get_keys(self) -> List[str]:
        return list(self.frames.keys())

    def get_shape(self, tensor_name: str) -> List[int]:
        return list(self.frames[tensor_name])

    def add_filenames(self, filenames: Dict[int, List[str]]) -> None:
        """Registers files per rank; headers are read and validated now. A directory, index
        or model id registers each of its shards for that rank."""
        for rank, files in filenames.items():
            for path in files:
                header = _warpload._Loader(use_config=False)
                header.add(os.fspath(path))
                for entry in header.plan():
                    self.meta[entry[0]] = (entry, rank)
                    for name, _dtype, shape, _begin, _end in entry[1]:
                        self.frames[name] = list(shape)
                    logger.debug("add_filenames %d: path=%s", len(self.meta), entry[0])

    def _storage_options(self) -> Dict[str, Any]:
        constructor = self.copier_constructor
        if constructor is None:
            raise ValueError("the loader is closed")
        if not isinstance(constructor, WarploadCopierConstructor):
            raise _warpload.UnsupportedError(
                f"copier constructor {constructor!r} is not one of warpload's (gds, nogds, "
                "3fs): warpload.fastsafetensors reads files with warpload's storage backends "
                "and cannot drive a fastsafetensors copier, whose interface is built on "
                "fastsafetensors' C++ device buffers (docs/python.md)")
        return dict(constructor.options)

    def copy_files_to_device(self, dtype: Any = DType.AUTO, use_buf_register: bool = True,
                             max_copy_block_size: int = 16 * 1024 * 1024 * 1024
                             ) -> FilesBufferOnDevice:
        """Loads this rank's files (one parallel load) and returns their buffer. `dtype`
        (a DType or the framework's dtype) converts tensors as they are handed out."""
        del use_buf_register, max_copy_block_size
        options = self._storage_options()
        rank = self.pg.rank()
        key_to_rank_lidx: Dict[str, Tuple[int, int]] = {}
        filenames: Dict[str, str] = {}
        shapes: Dict[str, List[int]] = {}
        mine: List[str] = []
        lidx_of_rank: Dict[int, int] = {}
        ordered = sorted(self.meta.items(), key=lambda item: item[0])
        for path, (entry, owner) in ordered:
            lidx = lidx_of_rank.get(owner, 0)
            lidx_of_rank[owner] = lidx + 1
            for name, _dtype, shape, _begin, _end in entry[1]:
                if name in key_to_rank_lidx:
                    raise ValueError(f"FilesBufferOnDevice: key {name} must be unique among "
                                     f"files ({path} and {filenames[name]})")
                key_to_rank_lidx[name] = (owner, lidx)
                filenames[name] = path
                shapes[name] = list(shape)
            if owner == rank:
                mine.append(path)
        loader = None
        distributed = None
        if self.pg.size() > 1:
            from .. import _distributed

            if not _distributed.is_torch_group(self.pg):
                raise TypeError("pg.size() > 1 needs a torch.distributed ProcessGroup "
                                "(init_process_group first)")
            # Every file, in fastsafetensors' (sorted) order, read 1/world per rank.
            if _backends.device_only(options.get("backend")):
                options["backend"] = None  # host-memory delivery; GDS reads device memory
            distributed = _distributed.make_loader([path for path, _ in ordered], self.pg,
                                                   options, shared_storage=self._shared_storage)
            distributed.load(on_request=True)
        elif mine:
            loader = _api.make_loader(mine, self._device, self._kind, options)
            _api.run_load(loader, False, "warpload")
        fb = FilesBufferOnDevice(loader, key_to_rank_lidx, filenames, shapes, self.pg,
                                 self.framework, self._kind, distributed)
        if distributed is not None and self._device != "cpu":
            fb._target = self._device
        if dtype is not None and dtype is not DType.AUTO:
            fb._default_dtype = dtype
        return fb


class SafeTensorsFileLoader(BaseSafeTensorsFileLoader):
    """fastsafetensors.SafeTensorsFileLoader: copier "gds", or "nogds" with nogds=True."""

    @classmethod
    def process_extension_config(cls, ext_config: Mapping[str, Any],
                                 **kwargs: Any) -> Dict[str, Any]:
        """A settings-file section's copier_type ("gds" by default) becomes nogds."""
        del kwargs
        out = dict(ext_config)
        out["nogds"] = out.pop("copier_type", "gds") != "gds"
        return out

    def __init__(self, pg: Optional[Any], device: Any = "cpu", bbuf_size_kb: int = 16 * 1024,
                 max_threads: int = 16, nogds: bool = False, set_numa: bool = True,
                 disable_cache: bool = True, debug_log: bool = False,
                 framework: str = "pytorch", **kwargs: Any) -> None:
        if debug_log:
            logger.setLevel(logging.DEBUG)
        super().__init__(pg, device, "nogds" if nogds else "gds", set_numa, disable_cache,
                         framework, bbuf_size_kb=bbuf_size_kb, max_threads=max_threads,
                         **kwargs)


class fastsafe_open:  # noqa: N801 - fastsafetensors' name
    """Opens files (a path, a list, or {rank: [paths]}) and serves their tensors. Paths may
    be directories, index files or model ids as for add_filenames()."""

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

    def get_tensor_wrapped(self, name: str) -> TensorBase:
        return self._fb().get_tensor_wrapped(name)

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
