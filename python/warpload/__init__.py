"""warpload: fast safetensors loading.

    import warpload
    tensors = warpload.load_file("model.safetensors")            # {name: torch.Tensor}
    with warpload.safe_open("model/", framework="numpy") as f:   # file, directory, index.json
        w = f.get_tensor("lm_head.weight")
    for name, t in warpload.iterate_weights(files, memory_limit=256 << 20):
        ...
    from warpload.fastsafetensors import SafeTensorsFileLoader   # fastsafetensors drop-in
    tensors = warpload.torch.load(data)          # bytes; warpload.numpy too (safetensors.*)

Importing warpload does not import torch or numpy; they are imported on first use.
See docs/python.md for the zero-copy and lifetime rules, dtype fallbacks and errors.
"""

import atexit

from ._warpload import (
    CancelledError,
    DLPackTensor,
    InvalidFileError,
    SafetensorError,
    UnsupportedError,
    __version__,
    available_backends,
    backends,
    cuda_available,
    live_host_bytes,
    release_staging_pools,
    staging_pool_bytes,
)
from ._api import SafeSlice, iterate_weights, load_file, safe_open
from ._api import load_bytes as load
from ._tensors import stored_dtype

# The engine frees its staging pools (3FS iovs: /dev/shm segments) in a C exit handler, but an
# interpreter ended by an uncaught KeyboardInterrupt re-raises SIGINT after finalizing, and C
# exit handlers never run then; Python's run during finalization in every case.
atexit.register(release_staging_pools)

__all__ = [
    "CancelledError",
    "DLPackTensor",
    "InvalidFileError",
    "SafeSlice",
    "SafetensorError",
    "UnsupportedError",
    "__version__",
    "available_backends",
    "backends",
    "cuda_available",
    "iterate_weights",
    "live_host_bytes",
    "load",
    "load_file",
    "release_staging_pools",
    "safe_open",
    "staging_pool_bytes",
    "stored_dtype",
]
