"""fastsafetensors.parallel_loader: PipelineParallel and ParallelLoader.

Files are taken in batches of pg.size() (one file per rank per batch). queue_size as
upstream: -1 reads a batch only after the previous one was handed out; 0 reads the next
batch while the current one is handed out; N > 0 keeps up to N batches read ahead. The read
ahead runs on a background thread for a group of one; with more ranks batches are read in
turn on the caller's thread, so that every collective runs in the same order on every rank.

Tensors are zero-copy views that stay valid after their batch is closed, so nothing is
cloned (`need_clone` reports upstream's flag only).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Iterator, List, Optional, Tuple

from .._progress import Progress
from .common import SingleGroup, debug_enabled
from .loader import BaseSafeTensorsFileLoader, SafeTensorsFileLoader

logger = logging.getLogger(__name__)

_DONE = object()


class PipelineParallel:
    """Yields (name, tensor) over many files through `loader`, batch after batch."""

    def __init__(self, pg: Optional[Any], loader: BaseSafeTensorsFileLoader,
                 hf_weights_files: List[str], max_concurrent_producers: int = 1,
                 queue_size: int = 0, use_tqdm_on_load: bool = True, **kwargs: Any) -> None:
        del kwargs  # the loader's options, already applied by whoever built it
        if max_concurrent_producers != 1:
            raise ValueError(
                f"max_concurrent_producers must be 1 (got {max_concurrent_producers}): "
                "batches are handed out in one order on every rank")
        if pg is None:
            pg = SingleGroup()
        self.pg = pg
        self.loader = loader
        self.hf_weights_files = list(hf_weights_files)
        self.max_concurrent_producers = max_concurrent_producers
        self.queue_size = queue_size
        self.use_tqdm_on_load = use_tqdm_on_load
        self.print_log = debug_enabled()
        self.log_prefix = f"PG{pg.rank()}"
        self.need_clone = pg.size() == 1
        size = pg.size()
        self.weight_files_batches = [self.hf_weights_files[i:i + size]
                                     for i in range(0, len(self.hf_weights_files), size)]

    def _read_batch(self, batch: List[str]) -> Any:
        self.loader.add_filenames({rank: [path] for rank, path in enumerate(batch)})
        fb = self.loader.copy_files_to_device()
        self.loader.reset()
        return fb

    def _batches(self) -> Iterator[Any]:
        """FilesBufferOnDevice per batch, read ahead as queue_size says."""
        if self.queue_size < 0 or self.pg.size() > 1:
            for batch in self.weight_files_batches:
                yield self._read_batch(batch)
            return
        ready: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, self.queue_size))
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in self.weight_files_batches:
                    if stop.is_set():
                        return
                    fb = self._read_batch(batch)
                    while not stop.is_set():
                        try:
                            ready.put(fb, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    else:
                        fb.close()
                        return
                ready.put(_DONE)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                ready.put(e)

        producer = threading.Thread(target=produce, name="warpload-pipeline", daemon=True)
        producer.start()
        try:
            while True:
                item = ready.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while producer.is_alive():
                try:
                    leftover = ready.get(timeout=0.1)
                    if hasattr(leftover, "close"):
                        leftover.close()
                except queue.Empty:
                    pass
            producer.join()

    def iterate_weights(self) -> Iterator[Tuple[str, Any]]:
        show = None if self.use_tqdm_on_load and self.pg.rank() == 0 else False
        total = len(self.weight_files_batches)
        bar = Progress(show, total, "Loading safetensors checkpoint shards")
        try:
            for done, fb in enumerate(self._batches(), start=1):
                try:
                    for key in list(fb.key_to_rank_lidx.keys()):
                        yield key, fb.get_tensor(key)
                finally:
                    fb.close()
                if self.print_log:
                    logger.info("[%s] batch %d of %d handed out", self.log_prefix, done, total)
                if bar.active:
                    bar(done, total)
        finally:
            bar.close()

    def close(self) -> None:
        self.loader.close()


class ParallelLoader(PipelineParallel):
    """PipelineParallel over a SafeTensorsFileLoader built from the arguments."""

    def __init__(self, pg: Optional[Any], hf_weights_files: List[str],
                 max_concurrent_producers: int = 1, queue_size: int = 0,
                 use_tqdm_on_load: bool = True, device: str = "cpu",
                 bbuf_size_kb: int = 16 * 1024, max_threads: int = 16, nogds: bool = False,
                 set_numa: bool = True, debug_log: bool = False, framework: str = "pytorch",
                 **kwargs: Any) -> None:
        loader = SafeTensorsFileLoader(
            pg, device, bbuf_size_kb=bbuf_size_kb, max_threads=max_threads, nogds=nogds,
            set_numa=set_numa, disable_cache=True, debug_log=debug_log, framework=framework,
            **kwargs)
        super().__init__(pg, loader, hf_weights_files, max_concurrent_producers, queue_size,
                         use_tqdm_on_load)
