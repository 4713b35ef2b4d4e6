"""Keyword options every entry point takes (the lowest module: _api, _distributed and the
fastsafetensors drop-in import it; it imports nothing of theirs)."""

from __future__ import annotations

from typing import Any, Dict

# Keyword options every entry point takes, with the engine's meaning (docs/python.md).
_OPTION_DEFAULTS: Dict[str, Any] = {
    "backend": None,        # warpload.backends() names; safetensors' "pread" = "posix"
                            # (None: the config's, else auto)
    "direct": False,        # O_DIRECT (backends that take it)
    "threads": 0,           # storage worker threads (0: backend default)
    "block_size": 0,        # bytes per read operation (0: backend default)
    "queue_depth": 0,       # reads in flight per uring thread (0: backend default)
    "config": None,         # settings file written by `warpload tune`
    "use_config": True,     # False: ignore every settings file
    "staging_bytes": 0,     # pinned staging for CUDA loads (0: 256 MiB)
    "mount_point": None,    # 3FS mount point (None: found per file)
    "connections": 0,       # URLs: ranged GETs in flight (0: the config's, else 16)
    "request_size": 0,      # URLs: bytes per ranged GET (0: the config's, else 8 MiB)
}


def _check_options(options: Dict[str, Any]) -> Dict[str, Any]:
    unknown = sorted(set(options) - set(_OPTION_DEFAULTS))
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(_OPTION_DEFAULTS))}")
    merged = dict(_OPTION_DEFAULTS)
    merged.update(options)
    return merged
