"""Ctrl-C and exceptions from progress callbacks cancel a load cleanly: the exception
propagates promptly, no buffer is kept, and the handle can load again."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import st_reference as ref
import warpload

MiB = 1 << 20


@pytest.fixture(scope="module")
def slow_file(tmp_path_factory):
    """512 MiB (sparse); read with 4 KiB blocks on one thread, a load takes ~1 s or more."""
    path = str(tmp_path_factory.mktemp("cancel") / "slow.safetensors")
    ref.write_sparse(path, [(f"t{i}", "F32", [16 * MiB]) for i in range(8)])
    return path


SLOW = dict(backend="posix", threads=1, block_size=4096)


def test_exception_in_progress_callback_cancels(slow_file):
    base = warpload.live_host_bytes()
    calls = []

    def progress(done, total):
        calls.append(done)
        raise KeyboardInterrupt  # what Ctrl-C inside a callback looks like

    f = warpload.safe_open(slow_file, progress=progress, **SLOW)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        f.get_tensor("t0")
    assert time.monotonic() - start < 5
    assert len(calls) == 1
    assert warpload.live_host_bytes() == base  # nothing partly loaded is kept
    f._progress = None
    assert f.get_tensor("t7").shape[0] == 16 * MiB  # the handle still works
    f.close()


def test_other_exceptions_propagate_too(slow_file):
    class Stop(Exception):
        pass

    def progress(done, total):
        raise Stop("enough")

    base = warpload.live_host_bytes()
    with pytest.raises(Stop):
        warpload.load_file(slow_file, progress=progress, **SLOW)
    with pytest.raises(Stop):
        for _ in warpload.iterate_weights(slow_file, memory_limit=256 * MiB, progress=progress,
                                          **SLOW):
            pass
    assert warpload.live_host_bytes() == base


CHILD = textwrap.dedent("""
    import sys, time, warpload
    path = sys.argv[1]
    started = []
    def progress(done, total):
        if not started:
            started.append(time.monotonic())
            print("LOADING", flush=True)
    rss = lambda: int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])
    before = rss()
    interrupted = False
    try:
        warpload.load_file(path, framework="numpy", progress=progress, backend="posix",
                           threads=1, block_size=4096)
        print("FINISHED", flush=True)
    except KeyboardInterrupt:
        interrupted = True
    # Counted once the exception is handled: until then its traceback keeps load_file's frame
    # (and whatever it held) alive, as for any Python exception.
    if interrupted:
        print("INTERRUPTED live=%d rss_growth_kib=%d" % (warpload.live_host_bytes(), rss() - before),
              flush=True)
""")


def test_sigint_cancels_a_load_in_progress(slow_file, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for attempt in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, slow_file], env=env,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "LOADING"
            sent = time.monotonic()
            child.send_signal(signal.SIGINT)
            out, _ = child.communicate(timeout=30)
            elapsed = time.monotonic() - sent
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if out.startswith("FINISHED"):
            continue  # the load beat the signal; try again
        assert out.startswith("INTERRUPTED live=0 "), out
        growth_kib = int(out.split("rss_growth_kib=")[1])
        assert growth_kib < 64 * 1024, out  # the 512 MiB destination was freed
        assert child.returncode == 0
        assert elapsed < 3, f"took {elapsed:.2f} s to stop"
        return
    pytest.skip("loads finished before SIGINT arrived three times")


RANK_CHILD = textwrap.dedent("""
    import datetime, sys, time
    import torch.distributed as dist
    import warpload
    rank, store, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", store=dist.FileStore(store, 2), rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=20))
    dist.barrier()
    print("READY", flush=True)
    def progress(done, total):
        if done > 0 and rank == 0 and not progress.told:
            progress.told = True
            print("LOADING", flush=True)  # this rank is reading: the signal lands mid-read
    progress.told = False
    try:
        warpload.load_file(path, framework="numpy", process_group=dist.group.WORLD,
                           backend="posix", threads=1, block_size=4096, progress=progress)
        print("FINISHED", flush=True)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
    except warpload.CancelledError as e:
        print("PEER-CANCELLED", " ".join(str(e).split()), flush=True)
""")


def test_sigint_on_one_rank_fails_every_rank(tmp_path):
    """Two gloo ranks load 2 GiB (each reads half in 4 KiB preads); Ctrl-C on rank 0 while it
    reads (its progress callback says when) stops its reads, and the error agreement fails
    rank 1 too, naming rank 0."""
    pytest.importorskip("torch.distributed")
    path = str(tmp_path / "big.safetensors")
    ref.write_sparse(path, [(f"t{i}", "F32", [64 * MiB]) for i in range(8)])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
               OMP_NUM_THREADS="1")
    for attempt in range(3):
        store = str(tmp_path / f"store-{attempt}")
        ranks = [subprocess.Popen([sys.executable, "-c", RANK_CHILD, str(r), store, path],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for r in range(2)]
        try:
            for child in ranks:
                assert child.stdout.readline().strip() == "READY"
            assert ranks[0].stdout.readline().strip() == "LOADING"
            sent = time.monotonic()
            ranks[0].send_signal(signal.SIGINT)
            outs = [child.communicate(timeout=60)[0] for child in ranks]
            elapsed = time.monotonic() - sent
        finally:
            for child in ranks:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        if "FINISHED" in outs[0]:
            continue  # the load beat the signal; try again
        assert outs[0].startswith("INTERRUPTED"), outs[0]
        assert outs[1].startswith("PEER-CANCELLED"), outs[1]
        assert "rank 0 of 2" in outs[1] and "cancelled" in outs[1], outs[1]
        assert elapsed < 15, f"took {elapsed:.2f} s to stop"
        return
    pytest.skip("loads finished before SIGINT arrived three times")
