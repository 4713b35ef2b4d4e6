"""Multi-rank loading over a torch.distributed process group (docs/distributed.md).

The engine (warpload._warpload._DistributedLoader, C++) plans which bytes each rank reads,
reads them and fills buffers; TorchCollective moves the bytes with torch.distributed on uint8
tensors that wrap warpload's memory (no copies for gloo). Subgroups work: ranks passed to
torch are translated to global ranks.

Which torch.distributed operations (all on gloo's CPU tensors, torch >= 1.13):
  all_gather          load_file / iterate_weights (equal sizes per rank, as gloo requires)
  broadcast           get_tensor of a tensor read by several ranks (one per reader)
  isend / irecv       get_sharded / push_tensor (only the bytes a rank needs)
  all_gather_object   the error agreement after the reads
gloo lacks reduce_scatter, all_to_all (lists) and all_gather_into_tensor, and its scatter
needs equal sizes, so none of those is used.

Failures: every wait is bounded by the process group's timeout (init_process_group(...,
timeout=...)); a timeout becomes TimeoutError, a lost peer ConnectionResetError, both naming
the operation, this rank and the group size. After either, the group is unusable (gloo closes
its connections), as for any torch.distributed failure.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import _warpload
from ._options import _check_options


def is_torch_group(pg: Any) -> bool:
    """Whether pg is a torch.distributed ProcessGroup (None: the default group, if any)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    if not dist.is_available() or not dist.is_initialized():
        return False
    return pg is None or isinstance(pg, dist.ProcessGroup)


class TorchCollective:
    """warpload's Collective over a torch.distributed process group (None: the default)."""

    def __init__(self, pg: Any = None) -> None:
        import torch
        import torch.distributed as dist

        self._torch = torch
        self._dist = dist
        self._pg = pg
        self._rank = dist.get_rank(pg)
        self._size = dist.get_world_size(pg)
        if pg is None or pg is dist.group.WORLD:
            self._global = list(range(self._size))
        else:
            self._global = [dist.get_global_rank(pg, r) for r in range(self._size)]
        # NCCL groups need device tensors: bytes are staged through the current CUDA device.
        backend = str(dist.get_backend(pg)).lower()
        self._device = (torch.device("cuda", torch.cuda.current_device())
                        if backend == "nccl" else None)

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size

    # -- the operations warpload's engine calls --
    def all_gather(self, inp: memoryview, outs: List[memoryview]) -> None:
        def run() -> None:
            if self._device is None:
                # gloo's allgather copies every input into one flat tensor and out again;
                # one in-place broadcast per rank moves the same bytes without those copies
                # (3.7x faster full delivery with 4 ranks, docs/performance.md).
                for q, o in enumerate(outs):
                    self._dist.broadcast(self._host(o), src=self._global[q], group=self._pg)
                return
            source = self._stage(inp)
            targets = [self._empty_like(o) for o in outs]
            self._dist.all_gather(targets, source, group=self._pg)
            for o, t in zip(outs, targets):
                self._unstage(t, o)
        self._run("all_gather", run)

    def broadcast(self, buf: memoryview, root: int) -> None:
        def run() -> None:
            t = self._stage(buf)
            self._dist.broadcast(t, src=self._global[root], group=self._pg)
            self._unstage(t, buf)
        self._run(f"broadcast from rank {root}", run)

    def exchange(self, sends: List[Tuple[int, memoryview]],
                 recvs: List[Tuple[int, memoryview]]) -> None:
        def run() -> None:
            works = [self._dist.isend(self._stage(b), dst=self._global[p], group=self._pg)
                     for p, b in sends]
            targets = [(b, self._empty_like(b)) for _p, b in recvs]
            works += [self._dist.irecv(t, src=self._global[p], group=self._pg)
                      for (p, _b), (_b2, t) in zip(recvs, targets)]
            for w in works:
                w.wait()
            for b, t in targets:
                self._unstage(t, b)
        peers = sorted({p for p, _ in sends} | {p for p, _ in recvs})
        self._run(f"send/recv with rank(s) {peers}", run)

    def all_gather_status(self, status: str) -> List[str]:
        out: List[Any] = [None] * self._size
        self._run("error agreement (all_gather_object)",
                  lambda: self._dist.all_gather_object(out, status, group=self._pg))
        return [str(s) for s in out]

    # -- helpers --
    def _host(self, buf: memoryview) -> Any:
        return self._torch.frombuffer(buf, dtype=self._torch.uint8)

    def _stage(self, buf: memoryview) -> Any:
        t = self._host(buf)
        return t if self._device is None else t.to(self._device)

    def _empty_like(self, buf: memoryview) -> Any:
        if self._device is None:
            return self._host(buf)
        return self._torch.empty(len(buf), dtype=self._torch.uint8, device=self._device)

    def _unstage(self, t: Any, buf: memoryview) -> None:
        if self._device is not None:
            self._host(buf).copy_(t.cpu())

    def _run(self, op: str, fn: Any) -> None:
        try:
            fn()
        except RuntimeError as e:
            text = str(e)
            where = (f"warpload: {op} over the process group failed on rank {self._rank} of "
                     f"{self._size}")
            if "timed out" in text.lower() or "timeout" in text.lower():
                raise TimeoutError(errno.ETIMEDOUT,
                                   f"{where}: a peer did not arrive within the group's "
                                   f"timeout: {text}") from e
            raise ConnectionResetError(errno.ECONNRESET,
                                       f"{where}: a peer failed or left: {text}") from e


def make_loader(paths: Sequence[Any], pg: Any, options: Dict[str, Any],
                shared_storage: bool = False) -> "_warpload._DistributedLoader":
    """A _DistributedLoader over `pg` with every path added. A rank whose add() fails tells
    the others (their load() fails with its message) before raising."""
    o = _check_options(options)
    loader = _warpload._DistributedLoader(
        TorchCollective(pg), backend=o["backend"] or "", direct=bool(o["direct"]),
        threads=int(o["threads"]), block_size=int(o["block_size"]),
        queue_depth=int(o["queue_depth"]),
        config=os.fspath(o["config"]) if o["config"] else "", use_config=bool(o["use_config"]),
        mount_point=o["mount_point"] or "", shared_storage=shared_storage,
        connections=int(o["connections"]), request_size=int(o["request_size"]))
    try:
        for path in paths:
            loader.add(os.fspath(path))
    except Exception as e:
        loader.fail(e)
        raise
    return loader


def group_size(pg: Any) -> int:
    if pg is None:
        import torch.distributed as dist

        return dist.get_world_size() if dist.is_initialized() else 1
    return int(pg.size())


def load_all(paths: Sequence[Any], pg: Any, kind: str, target: str,
             options: Dict[str, Any], progress: Any = None) -> Dict[str, Any]:
    """load_file(..., process_group=pg): every rank reads 1/world of the bytes, then an
    all-gather gives every rank every tensor. progress follows this rank's reads."""
    from . import _progress, _tensors

    loader = make_loader(paths, pg, options)
    world = group_size(pg)
    bar = _progress.Progress(progress, (loader.total_bytes + world - 1) // world,
                             f"warpload rank {loader.rank}")
    try:
        loader.load(on_request=False, progress=bar if bar.active else None)
    finally:
        bar.close()
    out: Dict[str, Any] = {}
    for name in loader.keys():
        tensor = _tensors.convert(loader.tensor(name), kind)
        if target != "cpu":
            tensor = tensor.to(target)
        out[name] = tensor
    loader.release()
    return out


def iterate(paths: Sequence[Any], pg: Any, kind: str, target: str,
            memory_limit: Optional[int], options: Dict[str, Any]) -> Any:
    """iterate_weights(..., process_group=pg): chunk by chunk, each chunk planned over the
    ranks and all-gathered; same chunks and memory bound as the single-process iterator."""
    from . import _tensors

    loader = make_loader(paths, pg, options)
    try:
        for ranges, _size, names in loader.plan_chunks(memory_limit or 0, 2):
            loader.load([_warpload._Segment(f, a, b) for f, a, b in ranges], on_request=False)
            for name in names:
                tensor = _tensors.convert(loader.tensor(name), kind)
                if target != "cpu":
                    tensor = tensor.to(target)
                yield name, tensor
                del tensor
            loader.release()
    finally:
        loader.release()
