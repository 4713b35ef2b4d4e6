"""fastsafetensors.copier.gds: the "gds" copier type."""

from .builtin import GdsFileCopier, new_gds_file_copier

__all__ = ["GdsFileCopier", "new_gds_file_copier"]
