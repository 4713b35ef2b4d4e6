"""The built-in copier types, "gds", "nogds" and "3fs", as warpload storage settings.

fastsafetensors' copiers read a file into a device buffer themselves; here the reading is
warpload's (one parallel load per copy_files_to_device()), so a built-in copier constructor
only carries the storage options its type means:

  gds     the settings file's backend, else "auto" (GPUDirect Storage for a CUDA device
          wherever cuFile runs in GDS mode, the staged pipeline otherwise)
  nogds   never "gds": the settings file's backend unless that is "gds", else "auto"
  3fs     the "3fs" (USRBIO) backend at mount_point
max_threads and bbuf_size_kb become storage threads and staging bytes when not left at
fastsafetensors' defaults; warpload options (backend, threads, ...) apply as given; options
fastsafetensors passes to its copiers with no warpload meaning are accepted; anything else is
accepted with a UserWarning.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Optional

from ... import _backends, _warpload
from ..st_types import to_device
from .registry import register_copier_constructor

WARPLOAD_OPTIONS = ("backend", "threads", "block_size", "queue_depth", "direct", "config",
                    "use_config", "staging_bytes", "mount_point", "connections",
                    "request_size")
# fastsafetensors options with no warpload counterpart: accepted silently.
IGNORED_OPTIONS = ("max_pinned_memory_in_kb", "use_shm", "cache", "auto_mem_delete", "framework",
                   "set_numa", "disable_cache", "debug_log", "max_copy_block_size",
                   "use_buf_register", "queue_size", "max_concurrent_producers",
                   "use_tqdm_on_load", "entries", "io_depth", "buffer_size")
DEFAULT_THREADS = 16
DEFAULT_BBUF_KB = 16 * 1024


class WarploadFileCopier:
    """One file's copier: the storage options warpload reads it with. fastsafetensors'
    submit_io()/wait_io() work on its C++ device buffers and are not provided."""

    copier_type = ""

    def __init__(self, metadata: Any, device: Any, options: Dict[str, Any]) -> None:
        self.metadata = metadata
        self.device = to_device(device)
        self.options = dict(options)

    def submit_io(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "warpload reads files in copy_files_to_device(); a copier's own submit_io() / "
            "wait_io() over fastsafetensors' C++ buffers is not provided")

    wait_io = submit_io


class GdsFileCopier(WarploadFileCopier):
    copier_type = "gds"


class NoGdsFileCopier(WarploadFileCopier):
    copier_type = "nogds"


class ThreeFSFileCopier(WarploadFileCopier):
    copier_type = "3fs"


class WarploadCopierConstructor:
    """What the built-in factories return: call it (metadata, device, framework) for a
    copier, or read `options` (warpload storage options) directly."""

    def __init__(self, copier_class: type, options: Dict[str, Any]) -> None:
        self.copier_class = copier_class
        self.options = options

    def __call__(self, metadata: Any, device: Any, framework: Any = None) -> WarploadFileCopier:
        del framework
        return self.copier_class(metadata, device, self.options)

    def __repr__(self) -> str:
        return f"<{self.copier_class.copier_type} copier constructor {self.options}>"


def storage_options(kwargs: Dict[str, Any], bbuf_size_kb: int = DEFAULT_BBUF_KB,
                    max_threads: int = DEFAULT_THREADS) -> Dict[str, Any]:
    options = {k: kwargs[k] for k in WARPLOAD_OPTIONS if k in kwargs}
    if max_threads != DEFAULT_THREADS and "threads" not in options:
        options["threads"] = max_threads
    if bbuf_size_kb != DEFAULT_BBUF_KB and "staging_bytes" not in options:
        options["staging_bytes"] = bbuf_size_kb * 1024
    unknown = sorted(k for k in kwargs if k not in WARPLOAD_OPTIONS and k not in IGNORED_OPTIONS)
    if unknown:
        warnings.warn(f"warpload.fastsafetensors: ignoring option(s) {', '.join(unknown)}",
                      stacklevel=5)
    return options


def _configured_backend(options: Dict[str, Any]) -> str:
    return _warpload.resolved_backend("", os.fspath(options.get("config") or ""),
                                      bool(options.get("use_config", True)))


@register_copier_constructor("gds")
def new_gds_file_copier(device: Any, bbuf_size_kb: int = DEFAULT_BBUF_KB,
                        max_threads: int = DEFAULT_THREADS,
                        **kwargs: Any) -> WarploadCopierConstructor:
    options = storage_options(kwargs, bbuf_size_kb, max_threads)
    # No backend named: the settings file's, else the default ("auto"), which reads a device
    # load with GPUDirect Storage wherever cuFile runs in GDS mode and stages it otherwise.
    del device
    return WarploadCopierConstructor(GdsFileCopier, options)


@register_copier_constructor("nogds")
def new_nogds_file_copier(device: Any, bbuf_size_kb: int = DEFAULT_BBUF_KB,
                          max_threads: int = DEFAULT_THREADS,
                          **kwargs: Any) -> WarploadCopierConstructor:
    del device
    options = storage_options(kwargs, bbuf_size_kb, max_threads)
    if not options.get("backend"):
        options["backend"] = (_backends.default if _backends.device_only(_configured_backend(options))
                              else None)
    return WarploadCopierConstructor(NoGdsFileCopier, options)


@register_copier_constructor("3fs")
def new_threefs_file_copier(device: Any, mount_point: Optional[str] = "/mnt/3fs",
                            **kwargs: Any) -> WarploadCopierConstructor:
    del device
    options = storage_options(kwargs)
    options.setdefault("backend", _backends.first_with("needs_mount"))  # 3FS USRBIO
    options["mount_point"] = mount_point or None
    return WarploadCopierConstructor(ThreeFSFileCopier, options)
