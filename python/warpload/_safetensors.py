"""safetensors' rules that the safetensors-style API (load_file, safe_open, load) follows:
backend names, error types and messages, get_slice() index checks, loading from bytes.

Errors: `SafetensorError` is safetensors' exception type (warpload.SafetensorError; every
InvalidFileError is one). The errors raised here are also the Python type warpload used
before (UnsupportedError for a backend, ValueError after close, IndexError for an index), so
code written against either keeps working.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import _warpload

SafetensorError = _warpload.SafetensorError

# safetensors' backend names (safe_open/load_file backend=) onto warpload's.
_BACKEND_ALIASES = {"pread": "posix"}


class UnknownBackendError(_warpload.UnsupportedError, SafetensorError):  # type: ignore[misc]
    """backend= names no backend (an UnsupportedError and a SafetensorError)."""


class ClosedHandleError(SafetensorError, ValueError):  # type: ignore[misc]
    """A safe_open handle used after close() (a SafetensorError and a ValueError)."""


class SliceError(SafetensorError, IndexError):  # type: ignore[misc]
    """get_slice()[...] with an index safetensors refuses (a SafetensorError and an
    IndexError)."""


def backend_name(backend: Optional[str]) -> Optional[str]:
    """warpload's backend for a safetensors or warpload name; None stays None (the settings
    file's, else auto). An unknown name raises UnknownBackendError now, at open."""
    if backend is None or backend == "":
        return None
    name = _BACKEND_ALIASES.get(backend, backend)
    registered = list(_warpload.backend_names())  # the engine's registry
    if name not in registered:
        raise UnknownBackendError(
            f"unknown backend '{backend}': safetensors' names are 'mmap' and 'pread', "
            f"warpload's {', '.join(repr(b) for b in registered)}")
    return name


class MissingFileError(FileNotFoundError):
    """A missing file: errno ENOENT and filename set, str() in safetensors' words."""

    def __str__(self) -> str:
        return f"No such file or directory: {self.filename}"


def not_found(error: FileNotFoundError, given: Any) -> FileNotFoundError:
    """safetensors' message for a missing file ("No such file or directory: <path>"); other
    not-found errors (an index naming a missing shard, a model id missing from the Hugging
    Face cache, which says where it looked) keep warpload's message."""
    if not str(error).rstrip().endswith("no such file or directory"):
        return error
    path = os.fspath(given) if isinstance(given, (str, bytes, os.PathLike)) else str(given)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return MissingFileError(errno.ENOENT, os.strerror(errno.ENOENT), path)


def _describe(items: Sequence[Any]) -> str:
    def one(item: Any) -> str:
        if item is Ellipsis:
            return "..."
        if isinstance(item, slice):
            text = ("" if item.start is None else str(item.start)) + ":" + (
                "" if item.stop is None else str(item.stop))
            return text if item.step is None else f"{text}:{item.step}"
        return repr(item)

    return "[" + ", ".join(one(item) for item in items) + "]"


def check_index(index: Any, shape: Tuple[int, ...]) -> None:
    """Refuses what safetensors' get_slice refuses: a non-empty list (or array) as an index,
    an integer outside its dimension, a slice whose stop passes the end."""
    items: List[Any] = list(index) if isinstance(index, tuple) else [index]
    if any(_is_sequence(item) and len(item) != 0 for item in items):
        # safetensors' own message for advanced indexing, word for word (callers match on it).
        raise SliceError("Non empty lists are not implemented")
    ellipses = sum(1 for item in items if item is Ellipsis)
    dims = list(range(len(items)))
    if ellipses:
        at = items.index(Ellipsis)
        after = len(items) - at - 1
        dims = list(range(at)) + [-1] + list(range(len(shape) - after, len(shape)))
    for item, dim in zip(items, dims):
        if dim < 0 or dim >= len(shape) or item is None:
            continue
        size = shape[dim]
        if isinstance(item, bool) or not isinstance(item, (int, slice)):
            if hasattr(item, "__index__") and not _is_sequence(item):
                item = item.__index__()
            else:
                continue
        if isinstance(item, int):
            if item < -size:
                raise SliceError(f"Invalid index {item} for dimension {dim} of size {size}")
            if item >= size:
                raise SliceError(f"Error during slicing {_describe(items)} with shape "
                                 f"{list(shape)}: index {item} out of bounds for tensor "
                                 f"dimension #{dim} of size {size}")
        elif item.stop is not None and item.stop > size:
            raise SliceError(f"Error during slicing {_describe(items)} with shape "
                             f"{list(shape)}: index {item.stop - 1} out of bounds for tensor "
                             f"dimension #{dim} of size {size}")


def _is_sequence(item: Any) -> bool:
    return isinstance(item, (list, range)) or (
        hasattr(item, "shape") and hasattr(item, "__len__") and not isinstance(item, (str,
                                                                                      bytes)))
