"""What the Python layer asks of storage backends, answered by the engine's registry
(warpload.backends(); src/storage/storage.cpp) instead of by comparing names: adding a backend
there changes nothing here."""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional

from . import _warpload


@functools.lru_cache(maxsize=None)
def _flags() -> Dict[str, Dict[str, Any]]:
    """name -> capability flags (static; availability is asked each time)."""
    return {b["name"]: b for b in _warpload.backends()}


def names() -> List[str]:
    return list(_warpload.backend_names())


def has(name: Optional[str], flag: str) -> bool:
    """Whether backend `name` has capability `flag` (False for None or an unknown name)."""
    info = _flags().get(name or "")
    return bool(info and info.get(flag))


def device_only(name: Optional[str]) -> bool:
    """A backend that reads only into device memory (GPUDirect Storage)."""
    return has(name, "device_destinations") and not has(name, "host_destinations")


def first_with(flag: str) -> Optional[str]:
    """The first registered backend with `flag`, available here or not."""
    for name in names():
        if has(name, flag):
            return name
    return None


default = _warpload.default_backend
