"""fastsafetensors.auto_loader: AutoLoader, the loader the settings file chooses.

    loader = AutoLoader(pg, files, device="cuda:0")   # settings: config.load_config()
    for name, tensor in loader.iterate_weights(): ...
    loader.close()

"loader" in the settings names the class ("base": SafeTensorsFileLoader, "3fs":
ThreeFSLoader); its section is turned into keyword arguments by the class's
process_extension_config(); the "parallel" settings drive PipelineParallel.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .config import LoaderConfig, load_config
from .loader import BaseSafeTensorsFileLoader, SafeTensorsFileLoader
from .parallel_loader import PipelineParallel
from .threefs_loader import ThreeFSLoader

__all__ = ["AutoLoader", "SafeTensorsFileLoader", "ThreeFSLoader"]

logger = logging.getLogger(__name__)

# Loader name -> name of the class in this module, looked up when an AutoLoader is made (so
# that a test's unittest.mock.patch of the module attribute takes effect).
_LOADER_REGISTRY: Dict[str, str] = {"base": "SafeTensorsFileLoader", "3fs": "ThreeFSLoader"}


def _loader_class(name: str) -> type:
    attribute = _LOADER_REGISTRY.get(name)
    if attribute is None:
        raise ValueError(f"Unknown loader type: {name!r}. Available: {list(_LOADER_REGISTRY)}")
    return globals()[attribute]


class AutoLoader:
    """Builds the configured loader and a PipelineParallel over hf_weights_files."""

    def __init__(self, pg: Optional[Any], hf_weights_files: List[str],
                 device: str = "cpu") -> None:
        self._config = load_config()
        cls = _loader_class(self._config.loader)
        section = cls.process_extension_config(
            self._config.get_extension_config(self._config.loader),
            hf_weights_files=hf_weights_files)
        self._loader: BaseSafeTensorsFileLoader = cls(
            pg, device=device, framework=self._config.framework,
            debug_log=self._config.debug_log, set_numa=self._config.set_numa,
            disable_cache=self._config.disable_cache, **section)
        self._pipeline = PipelineParallel(pg=pg, loader=self._loader,
                                          hf_weights_files=hf_weights_files,
                                          **self._config.create_parallel_kwargs())
        logger.info("AutoLoader: loader=%s device=%s files=%d %s", self._config.loader, device,
                    len(hf_weights_files), section)

    @property
    def config(self) -> LoaderConfig:
        return self._config

    def iterate_weights(self) -> Iterator[Tuple[str, Any]]:
        return self._pipeline.iterate_weights()

    def close(self) -> None:
        self._pipeline.close()  # closes the loader too
