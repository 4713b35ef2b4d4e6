"""fastsafetensors.threefs_loader: ThreeFSLoader and ParallelThreeFSLoader (the "3fs"
backend, 3FS's USRBIO client loaded at run time).

The mount point, when not given, is found as upstream finds it: by
`fastsafetensor_3fs_reader.extract_mount_point` when that package is installed, else by
warpload itself (the nearest directory above the file holding 3FS's `3fs-virt/`), else left
to the engine, which finds it per file.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Mapping, Optional

from .common import init_logger
from .loader import BaseSafeTensorsFileLoader
from .parallel_loader import PipelineParallel

__all__ = ["ParallelThreeFSLoader", "ThreeFSLoader"]

logger = init_logger(__name__)


def _find_mount_point(path: str) -> Optional[str]:
    """The 3FS mount holding `path`, or None when none is found."""
    try:
        from fastsafetensor_3fs_reader import extract_mount_point as external
    except ImportError:
        external = None
    if external is not None:
        return str(external(path))
    here = os.path.dirname(os.path.abspath(os.fspath(path)))
    while True:
        if os.path.isdir(os.path.join(here, "3fs-virt")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


class ThreeFSLoader(BaseSafeTensorsFileLoader):
    """Loads .safetensors files through 3FS USRBIO (copier type "3fs")."""

    @classmethod
    def process_extension_config(cls, ext_config: Mapping[str, Any],
                                 **kwargs: Any) -> Dict[str, Any]:
        """Fills in mount_point from the first of hf_weights_files when the section leaves
        it out or empty."""
        out = dict(ext_config)
        if not str(out.get("mount_point") or "").strip():
            files = kwargs.get("hf_weights_files") or []
            mount = _find_mount_point(files[0]) if files else None
            if mount:
                out["mount_point"] = mount
                logger.info("Inferred 3FS mount_point=%s from file paths", mount)
        return out

    def __init__(self, pg: Optional[Any], device: str = "cpu", mount_point: str = "/mnt/3fs",
                 debug_log: bool = False, disable_cache: bool = True,
                 framework: str = "pytorch", set_numa: bool = True, **kwargs: Any) -> None:
        if debug_log:
            logger.setLevel(logging.DEBUG)
        super().__init__(pg, device, copier_type="3fs", set_numa=set_numa,
                         disable_cache=disable_cache, framework=framework,
                         mount_point=mount_point, **kwargs)


class ParallelThreeFSLoader(PipelineParallel):
    """PipelineParallel over a ThreeFSLoader whose mount point comes from the first file."""

    def __init__(self, pg: Optional[Any], hf_weights_files: List[str],
                 max_concurrent_producers: int = 1, queue_size: int = 0,
                 use_tqdm_on_load: bool = True, device: str = "cpu", debug_log: bool = False,
                 framework: str = "pytorch", **kwargs: Any) -> None:
        files = list(hf_weights_files)
        mount_point = kwargs.pop("mount_point", None) or (
            _find_mount_point(files[0]) if files else None)
        loader = ThreeFSLoader(pg, device=device, mount_point=mount_point or "",
                               disable_cache=True, debug_log=debug_log, framework=framework,
                               **kwargs)
        super().__init__(pg, loader, files, max_concurrent_producers, queue_size,
                         use_tqdm_on_load)
