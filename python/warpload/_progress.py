"""Progress reporting for long loads: a tqdm bar on a terminal, nothing otherwise.

``progress`` arguments everywhere in warpload take:
  None      automatic: a tqdm bar when tqdm is installed and stderr is a terminal
  True      a tqdm bar whenever tqdm is installed
  False     nothing
  callable  called as ``progress(done_bytes, total_bytes)`` about ten times a second
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Union

ProgressArg = Union[None, bool, Callable[[int, int], Any]]


class Progress:
    """Turns loader callbacks (done, total) into bar updates; close() ends the bar."""

    def __init__(self, progress: ProgressArg, total: int, desc: str) -> None:
        self._callback: Optional[Callable[[int, int], Any]] = None
        self._bar: Any = None
        self._shown = 0
        if callable(progress) and not isinstance(progress, bool):
            self._callback = progress
            return
        enabled = progress if isinstance(progress, bool) else _stderr_is_terminal()
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm  # optional (Debian: python3-tqdm)
        except ImportError:
            return
        self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                         leave=False, mininterval=0.2)

    @property
    def active(self) -> bool:
        return self._callback is not None or self._bar is not None

    def __call__(self, done: int, total: int) -> None:
        if self._callback is not None:
            self._callback(done, total)
        elif self._bar is not None and done > self._shown:
            self._bar.update(done - self._shown)
            self._shown = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
