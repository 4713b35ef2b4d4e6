"""fastsafetensors.copier.threefs: the "3fs" copier type."""

from .builtin import ThreeFSFileCopier, new_threefs_file_copier

__all__ = ["ThreeFSFileCopier", "new_threefs_file_copier"]
