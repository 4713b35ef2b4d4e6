"""Drop-in for the fastsafetensors API (IBM), on warpload's engine.

Replace `fastsafetensors` by `warpload.fastsafetensors` in imports; module paths are
upstream's: loader, file_buffer, parallel_loader, threefs_loader, auto_loader, config,
copier, st_types, common, frameworks. What differs from upstream and why: docs/python.md
("fastsafetensors compatibility").
"""

from .auto_loader import AutoLoader
from .common import SingleGroup, get_device_numa_node
from .config import LoaderConfig, load_config
from .file_buffer import FilesBufferOnDevice
from .loader import BaseSafeTensorsFileLoader, SafeTensorsFileLoader, fastsafe_open
from .parallel_loader import ParallelLoader, PipelineParallel
from .st_types import Device, DeviceType, DType
from .threefs_loader import ParallelThreeFSLoader, ThreeFSLoader

__all__ = [
    "AutoLoader",
    "BaseSafeTensorsFileLoader",
    "DType",
    "Device",
    "DeviceType",
    "FilesBufferOnDevice",
    "LoaderConfig",
    "ParallelLoader",
    "ParallelThreeFSLoader",
    "PipelineParallel",
    "SafeTensorsFileLoader",
    "SingleGroup",
    "ThreeFSLoader",
    "fastsafe_open",
    "get_device_numa_node",
    "load_config",
]
