"""fastsafetensors.config: the settings file AutoLoader reads.

Format (JSON), as fastsafetensors: top-level scalars set LoaderConfig fields; the groups
"parallel" and "debug" are objects whose known fields are set as if top-level; any other
object is an extension section for the loader of that name (e.g. "base": {"copier_type":
"nogds", "bbuf_size_kb": 8192}, "3fs": {"mount_point": "/mnt/3fs"}). Unknown scalars are
ignored.

    {"loader": "3fs", "parallel": {"use_pipeline": true, "queue_size": 2},
     "3fs": {"mount_point": "/mnt/3fs"}}

Discovery (load_config): $FASTSAFETENSORS_CONFIG (FileNotFoundError when it names no file),
else ./fastsafetensors.json, else the defaults.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Dict

logger = logging.getLogger(__name__)

CONFIG_ENV_VAR = "FASTSAFETENSORS_CONFIG"
DEFAULT_CONFIG_PATH = "fastsafetensors.json"

_GROUPS = ("parallel", "debug")
# Fields every loader takes from the top level; an extension section cannot override them.
_SHARED_FIELDS = ("framework", "debug_log", "set_numa", "disable_cache")


@dataclasses.dataclass
class LoaderConfig:
    """AutoLoader's settings; per-loader sections through get_extension_config()."""

    loader: str = "base"
    framework: str = "pytorch"
    debug_log: bool = False
    set_numa: bool = True
    disable_cache: bool = True

    use_pipeline: bool = False
    max_concurrent_producers: int = 1
    queue_size: int = 0
    use_tqdm_on_load: bool = True

    _extensions: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_concurrent_producers != 1:
            raise ValueError(f"max_concurrent_producers must be 1 (got "
                             f"{self.max_concurrent_producers}): batches are handed out in "
                             "one order on every rank")

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "LoaderConfig":
        known = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        values: Dict[str, Any] = {}
        sections: Dict[str, Dict[str, Any]] = {}
        for key, value in data.items():
            if isinstance(value, dict) and key in _GROUPS:
                for name, item in value.items():
                    if name in known:
                        values[name] = item
                    else:
                        logger.debug("ignoring unknown setting %s.%s", key, name)
            elif isinstance(value, dict):
                sections[key] = dict(value)
            elif key in known:
                values[key] = value
            else:
                logger.debug("ignoring unknown setting %s", key)
        return cls(**values, _extensions=sections)

    @classmethod
    def from_file(cls, path: str) -> "LoaderConfig":
        return cls._from_json(path)

    @classmethod
    def _from_json(cls, path: str) -> "LoaderConfig":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        logger.info("Loaded config from JSON: %s", path)
        return cls.from_dict(data)

    def get_extension_config(self, name: str) -> Dict[str, Any]:
        """A copy of section `name` without the shared fields ({} when there is none)."""
        section = self._extensions.get(name, {})
        return {k: v for k, v in section.items() if k not in _SHARED_FIELDS}

    def create_parallel_kwargs(self) -> Dict[str, Any]:
        """PipelineParallel's arguments: read batch by batch unless use_pipeline."""
        if not self.use_pipeline:
            return {"queue_size": -1}
        return {"max_concurrent_producers": self.max_concurrent_producers,
                "queue_size": self.queue_size, "use_tqdm_on_load": self.use_tqdm_on_load}


def load_config() -> LoaderConfig:
    """$FASTSAFETENSORS_CONFIG, else ./fastsafetensors.json, else LoaderConfig()."""
    path = os.environ.get(CONFIG_ENV_VAR)
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Config file specified by {CONFIG_ENV_VAR} not found: "
                                    f"{path}")
        return LoaderConfig.from_file(path)
    if os.path.isfile(DEFAULT_CONFIG_PATH):
        return LoaderConfig.from_file(DEFAULT_CONFIG_PATH)
    return LoaderConfig()
