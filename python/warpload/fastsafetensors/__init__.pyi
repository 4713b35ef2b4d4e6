# Type stubs for warpload.fastsafetensors: the names it exports, typed by their modules.
from .auto_loader import AutoLoader as AutoLoader
from .common import SingleGroup as SingleGroup
from .common import get_device_numa_node as get_device_numa_node
from .config import LoaderConfig as LoaderConfig
from .config import load_config as load_config
from .file_buffer import FilesBufferOnDevice as FilesBufferOnDevice
from .loader import BaseSafeTensorsFileLoader as BaseSafeTensorsFileLoader
from .loader import SafeTensorsFileLoader as SafeTensorsFileLoader
from .loader import fastsafe_open as fastsafe_open
from .parallel_loader import ParallelLoader as ParallelLoader
from .parallel_loader import PipelineParallel as PipelineParallel
from .st_types import Device as Device
from .st_types import DeviceType as DeviceType
from .st_types import DType as DType
from .threefs_loader import ParallelThreeFSLoader as ParallelThreeFSLoader
from .threefs_loader import ThreeFSLoader as ThreeFSLoader

__all__: list[str]
