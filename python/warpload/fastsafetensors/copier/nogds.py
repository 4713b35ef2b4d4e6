"""fastsafetensors.copier.nogds: the "nogds" copier type."""

from .builtin import NoGdsFileCopier, new_nogds_file_copier

__all__ = ["NoGdsFileCopier", "new_nogds_file_copier"]
