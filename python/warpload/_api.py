"""The safetensors-style and streaming APIs over the engine (warpload._warpload)."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import _safetensors, _tensors, _warpload
from ._options import _OPTION_DEFAULTS, _check_options  # noqa: F401 - re-exported
from ._progress import Progress, ProgressArg

PathLike = Union[str, "os.PathLike[str]"]

def device_name(device: Any) -> str:
    """'cpu' or 'cuda:N' for "cpu", "cuda", "cuda:N", an int N, or a torch.device."""
    if isinstance(device, bool):
        raise ValueError(f"invalid device {device!r}")
    if isinstance(device, int):
        return f"cuda:{device}"
    name = str(device)
    if name == "cuda":
        index = None if isinstance(device, str) else getattr(device, "index", None)
        return f"cuda:{index or 0}"
    return name


def _torch_cuda_allocator(device: str) -> Any:
    """Device memory from PyTorch's caching allocator, when torch sees a GPU."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not device.startswith("cuda") or not torch.cuda.is_available():
        return None

    def allocate(nbytes: int) -> Tuple[Any, int]:
        block = torch.empty(nbytes, dtype=torch.uint8, device=device)
        return block, block.data_ptr()

    return allocate


def make_loader(paths: Sequence[PathLike], device: str, kind: str,
                options: Dict[str, Any]) -> "_warpload._Loader":
    o = _check_options(options)
    o["backend"] = _safetensors.backend_name(o["backend"])
    allocator = _torch_cuda_allocator(device) if kind == "torch" else None
    loader = _warpload._Loader(
        backend=o["backend"] or "", direct=bool(o["direct"]), threads=int(o["threads"]),
        block_size=int(o["block_size"]), queue_depth=int(o["queue_depth"]),
        config=os.fspath(o["config"]) if o["config"] else "", use_config=bool(o["use_config"]),
        device=device, staging_bytes=int(o["staging_bytes"]),
        mount_point=o["mount_point"] or "", allocator=allocator,
        connections=int(o["connections"]), request_size=int(o["request_size"]))
    for path in paths:
        try:
            loader.add(os.fspath(path))
        except FileNotFoundError as e:
            raise _safetensors.not_found(e, path) from None
    return loader


def run_load(loader: "_warpload._Loader", progress: ProgressArg, desc: str) -> Dict[str, Any]:
    bar = Progress(progress, loader.total_bytes, desc)
    try:
        return loader.load(progress=bar if bar.active else None)
    finally:
        bar.close()


def _as_paths(paths: Union[PathLike, Sequence[PathLike]]) -> List[PathLike]:
    if isinstance(paths, (str, bytes, os.PathLike)):
        return [paths]  # type: ignore[list-item]
    return list(paths)


def load_file(filename: Union[PathLike, Sequence[PathLike]], device: Any = "cpu", *,
              framework: str = "pt", progress: ProgressArg = None, process_group: Any = None,
              **options: Any) -> Dict[str, Any]:
    """Loads every tensor of a file (or directory, index.json, or list of them).

    Like safetensors.torch.load_file: returns {name: tensor} in file order. Tensors are
    zero-copy views of warpload's buffers and keep them alive.

    process_group (a torch.distributed ProcessGroup of more than one rank, every rank calling
    with the same files): each rank reads 1/world of the bytes and an all-gather gives every
    rank every tensor (docs/distributed.md). Tensors land in host memory first.
    """
    kind = _tensors.framework_kind(framework)
    if process_group is not None:
        from . import _distributed

        if _distributed.group_size(process_group) > 1:
            return _distributed.load_all(_as_paths(filename), process_group, kind,
                                         device_name(device), options, progress)
    loader = make_loader(_as_paths(filename), device_name(device), kind, options)
    run_load(loader, progress, "warpload")
    out = {name: _tensors.convert(loader.tensor(name), kind) for name in loader.keys()}
    loader.release()
    return out


def load_bytes(data: bytes, framework: str = "pt", device: Any = "cpu") -> Dict[str, Any]:
    """safetensors' load(bytes): every tensor of a serialized file given as bytes, validated
    as a file is. The bytes go through an anonymous in-memory file (memfd), read once."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"load() takes bytes, not {type(data).__name__}")
    fd = os.memfd_create("warpload-load", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])
        return load_file(f"/proc/self/fd/{fd}", device, framework=framework,
                              progress=False, use_config=False)
    finally:
        os.close(fd)


class safe_open:  # noqa: N801 - the name safetensors users know
    """safetensors.safe_open with warpload underneath.

    Headers are read and validated when the handle opens; the first tensor access loads
    every tensor of the file(s) with one parallel read, and tensors are zero-copy views.
    close() (or leaving the ``with`` block) drops the handle's buffers; tensors already
    returned keep theirs alive and stay valid (close never waits and never invalidates).
    """

    def __init__(self, filename: Union[PathLike, Sequence[PathLike]], framework: str = "pt",
                 device: Any = "cpu", *, progress: ProgressArg = None,
                 **options: Any) -> None:
        self._kind = _tensors.framework_kind(framework)
        self._framework = framework
        self._device = device_name(device)
        self._progress = progress
        self._loader: Optional[_warpload._Loader] = make_loader(
            _as_paths(filename), self._device, self._kind, options)
        self._plan = self._loader.plan()
        self._info: Dict[str, Tuple[str, Tuple[int, ...]]] = {}
        self._order: List[str] = []
        for _path, tensors, _metadata, _offset, _size in self._plan:
            for name, dtype, shape, _begin, _end in tensors:
                self._info[name] = (dtype, tuple(shape))
                self._order.append(name)
        self.stats: Optional[Dict[str, Any]] = None

    # -- header facts (no load needed) --
    def keys(self) -> List[str]:
        """Tensor names, sorted (as safetensors)."""
        self._check_open()
        return sorted(self._info)

    def offset_keys(self) -> List[str]:
        """Tensor names in file order, then data order."""
        self._check_open()
        return list(self._order)

    def metadata(self) -> Optional[Dict[str, str]]:
        """The "__metadata__" map (merged over files), or None when there is none."""
        self._check_open()
        merged: Dict[str, str] = {}
        for _path, _tensors_, metadata, _offset, _size in self._plan:
            for key, value in metadata.items():
                merged.setdefault(key, value)
        return merged or None

    def get_dtype(self, name: str) -> str:
        """The tensor's dtype in the file, e.g. "BF16" or "F8_E4M3"."""
        return self._lookup(name)[0]

    def get_shape(self, name: str) -> List[int]:
        return list(self._lookup(name)[1])

    # -- tensors --
    def get_tensor(self, name: str) -> Any:
        self._lookup(name)
        return _tensors.convert(self._loaded().tensor(name), self._kind)

    def get_slice(self, name: str) -> "SafeSlice":
        dtype, shape = self._lookup(name)
        return SafeSlice(self, name, dtype, shape)

    def get_tensors(self) -> Dict[str, Any]:
        """Every tensor, {name: tensor} in file order (as safetensors' get_tensors)."""
        loader = self._loaded()
        return {name: _tensors.convert(loader.tensor(name), self._kind) for name in self._order}

    def close(self) -> None:
        """Drops this handle's buffers; returned tensors stay valid. Idempotent."""
        if self._loader is not None:
            self._loader.release()
            self._loader = None

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._loader is None:
            raise _safetensors.ClosedHandleError("safe_open handle is closed")

    def _lookup(self, name: str) -> Tuple[str, Tuple[int, ...]]:
        self._check_open()
        try:
            return self._info[name]
        except KeyError:
            raise KeyError(f"no tensor named '{name}' in {self._files()}") from None

    def _files(self) -> str:
        return ", ".join(path for path, *_ in self._plan)

    def _loaded(self) -> "_warpload._Loader":
        if self._loader is None:
            raise _safetensors.ClosedHandleError("safe_open handle is closed")
        if not self._loader.loaded:
            self.stats = run_load(self._loader, self._progress, "warpload")
        return self._loader


class SafeSlice:
    """get_slice(name): shape and dtype without loading; ``[...]`` gives a view of the part.

    Indexing follows NumPy basic indexing (ints, slices with positive steps, Ellipsis).
    For a dtype returned as raw bytes, indices address elements, not bytes, and the result
    is again raw bytes with its last dimension in bytes.
    """

    def __init__(self, handle: safe_open, name: str, dtype: str, shape: Tuple[int, ...]):
        self._handle = handle
        self._name = name
        self._dtype = dtype
        self._shape = shape

    def get_shape(self) -> List[int]:
        return list(self._shape)

    def get_dtype(self) -> str:
        return self._dtype

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d tensor")
        return self._shape[0]

    def __getitem__(self, index: Any) -> Any:
        _safetensors.check_index(index, self._shape)
        tensor = self._handle.get_tensor(self._name)
        if not _tensors.is_raw_for(self._handle._kind, self._dtype):
            if self._handle._kind == "dlpack":
                raise TypeError("slicing needs framework='pt' or 'numpy'")
            return tensor[index]
        return _slice_raw(tensor, index, self._shape, _warpload.dtype_bits(self._dtype),
                          self._name)


def _expand_index(index: Any, ndim: int, name: str) -> List[Any]:
    items = list(index) if isinstance(index, tuple) else [index]
    if any(item is None for item in items):
        raise IndexError(f"tensor '{name}': None (new axis) is not supported for raw-byte dtypes")
    ellipses = sum(1 for item in items if item is Ellipsis)
    if ellipses > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    explicit = len(items) - ellipses
    if explicit > ndim:
        raise IndexError(f"tensor '{name}': too many indices for a {ndim}-d tensor")
    if ellipses:
        at = items.index(Ellipsis)
        items[at:at + 1] = [slice(None)] * (ndim - explicit)
    return items + [slice(None)] * (ndim - len(items))


def _slice_raw(raw: Any, index: Any, shape: Tuple[int, ...], bits: int, name: str) -> Any:
    ndim = len(shape)
    items = _expand_index(index, ndim, name)
    if bits % 8 != 0:
        # Sub-byte elements: only leading dimensions can be indexed on whole bytes.
        if ndim == 0 or items[-1] != slice(None):
            raise IndexError(f"tensor '{name}': sub-byte dtype; only dimensions before the last "
                             "can be indexed")
        if tuple(raw.shape[:-1]) != tuple(shape[:-1]):
            raise IndexError(f"tensor '{name}': rows are not whole bytes; cannot index")
        return raw[tuple(items)]
    size = bits // 8
    if ndim == 0:
        return raw[tuple(items)]
    elements = raw.reshape(tuple(shape) + (size,))
    picked = elements[tuple(items) + (slice(None),)]
    if isinstance(items[-1], slice) and picked.ndim >= 2:
        picked = picked.reshape(tuple(picked.shape[:-2]) + (picked.shape[-2] * size,))
    return picked


def iterate_weights(paths: Union[PathLike, Sequence[PathLike]], device: Any = "cpu",
                    memory_limit: Optional[int] = None, *, framework: str = "pt",
                    progress: ProgressArg = None, process_group: Any = None,
                    prefetch: bool = True, **options: Any) -> Iterator[Tuple[str, Any]]:
    """Yields (name, tensor) in file order, reading a bounded window at a time.

    Tensors are read in chunks of consecutive tensors (a tensor larger than a chunk is a chunk
    of its own). With prefetch (the default) the next chunk is read on a background thread
    while the caller works through the current one; chunks are then at most memory_limit / 3
    bytes: the chunk being handed out, the one being read, and the one the caller's last
    tensor may still pin. Without prefetch chunks are memory_limit / 2 and reads wait for the
    caller. Either way warpload's loaded data stays within memory_limit, plus at most one
    tensor larger than a chunk. Tensors the caller keeps pin their chunk (zero-copy).
    memory_limit None reads one file at a time. The chunks, the read ahead and the bound are
    the engine's (warpload::ChunkedReader, shared with `warpload load --memory-limit`). A
    progress callback runs on the thread that reads the chunk (with the GIL); an exception it
    raises stops the reads and is raised by the iterator.

    For device="cuda:N" chunks are read into host memory and each tensor is copied to the
    device by the framework (torch); memory_limit then bounds host memory.
    """
    kind = _tensors.framework_kind(framework)
    target = device_name(device)
    if target != "cpu" and kind != "torch":
        raise ValueError("iterate_weights to a GPU needs framework='pt'")
    if memory_limit is not None and memory_limit <= 0:
        raise ValueError("memory_limit must be a positive number of bytes")
    if process_group is not None:
        from . import _distributed

        if _distributed.group_size(process_group) > 1:
            # Each chunk is read 1/world per rank, then all-gathered (docs/distributed.md).
            return _distributed.iterate(_as_paths(paths), process_group, kind, target,
                                        memory_limit, options)
    loader = make_loader(_as_paths(paths), "cpu", "numpy", options)
    # The engine's bounded-memory reader (warpload::ChunkedReader): chunks, read-ahead, cancel.
    bar = Progress(progress, loader.total_bytes, "warpload")
    reader = _warpload._ChunkReader(loader, memory_limit=memory_limit or 0, prefetch=prefetch,
                                    progress=bar if bar.active else None)
    return _iterate(reader, kind, target, bar)


def _iterate(reader: "_warpload._ChunkReader", kind: str, target: str,
             bar: Progress) -> Iterator[Tuple[str, Any]]:
    try:
        while True:
            views = reader.next()
            if views is None:
                break
            views.reverse()  # pop() from the end hands tensors out in file order
            while views:
                view = views.pop()
                name = view.name
                tensor = _tensors.convert(view, kind)
                del view
                if target != "cpu":
                    tensor = tensor.to(target)
                yield name, tensor
                del tensor  # the caller's reference is the only one left
            del views
    finally:
        # The caller stopped early (break, an exception, Ctrl-C): stop the chunk being read
        # ahead and wait for it before returning.
        reader.cancel()
        reader.close()
        bar.close()
