"""iterate_weights: file order, bytes, and the memory bound (measured)."""

import gc
import time

import numpy as np
import pytest

import st_reference as ref
import warpload

MiB = 1 << 20
GiB = 1 << 30


def test_order_and_bytes_across_files(tmp_path):
    rng = np.random.default_rng(21)
    files = []
    for f in range(3):
        path = str(tmp_path / f"part{f}.safetensors")
        ts = [(f"f{f}.t{i}", "BF16" if i % 2 else "F8_E4M3", [37 + i, 5],
               rng.bytes((37 + i) * 5 * (2 if i % 2 else 1))) for i in range(7)]
        ts.append((f"f{f}.empty", "F32", [0, 3], b""))
        ref.write(path, ts, align=1 if f == 1 else 8)  # file 1: misaligned tensors
        files.append(path)
    expected = ref.read_many(files)
    for limit in (None, 1, 700, 10 * MiB):
        names = []
        for name, t in warpload.iterate_weights(files, memory_limit=limit, framework="numpy"):
            names.append(name)
            assert t.tobytes() == expected[name][2], (limit, name)
        assert names == list(expected), limit
    got = dict(warpload.iterate_weights(files))  # torch, kept: tensors pin their chunks
    assert got["f2.t1"].dtype.is_floating_point
    assert got["f0.t0"].numpy().tobytes() == expected["f0.t0"][2]


def test_memory_bound_on_2gib_checkpoint(tmp_path):
    """2 GiB checkpoint, memory_limit=256 MiB: loaded data held by warpload never exceeds the
    limit, and RSS stays under limit + a small constant."""
    path = str(tmp_path / "big.safetensors")
    # 64 tensors of 32 MiB; the data section is a hole (no disk use, reads as zeros).
    total = ref.write_sparse(path, [(f"layer.{i}", "F32", [8 * MiB]) for i in range(64)])
    assert total == 2 * GiB
    limit = 256 * MiB
    gc.collect()
    base_live = warpload.live_host_bytes()
    base_rss = ref.rss_bytes()
    peak_live = peak_rss = 0
    count = 0
    for name, t in warpload.iterate_weights(path, memory_limit=limit, framework="numpy",
                                            backend="posix"):
        assert t.nbytes == 32 * MiB and t[-1] == 0.0  # touch it, as a consumer would
        peak_live = max(peak_live, warpload.live_host_bytes() - base_live)
        peak_rss = max(peak_rss, ref.rss_bytes() - base_rss)
        count += 1
        del t
    assert count == 64
    print(f"\n2 GiB, memory_limit 256 MiB: peak loaded {peak_live / MiB:.0f} MiB, "
          f"peak RSS growth {peak_rss / MiB:.0f} MiB")
    assert peak_live <= limit
    assert peak_rss <= limit + 64 * MiB
    assert warpload.live_host_bytes() == base_live


def test_one_tensor_larger_than_the_limit(tmp_path):
    path = str(tmp_path / "one_big.safetensors")
    ref.write_sparse(path, [("small0", "U8", [MiB]), ("huge", "U8", [24 * MiB]),
                            ("small1", "U8", [MiB])])
    base = warpload.live_host_bytes()
    peak = 0
    for _name, t in warpload.iterate_weights(path, memory_limit=4 * MiB, framework="numpy"):
        peak = max(peak, warpload.live_host_bytes() - base)
        del t
    assert peak <= 4 * MiB + 24 * MiB


def test_errors_surface_while_iterating(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(warpload.iterate_weights(str(tmp_path / "missing.safetensors")))


SLOW = dict(backend="posix", threads=1, block_size=4096)  # ~0.5 GB/s: reads take time


def test_prefetch_reads_the_next_chunk_while_the_caller_works(tmp_path):
    """Ordering, not speed (sanitizer runs share the cores): with prefetch, chunk j+1 is read
    completely while the caller still works on tensor j; without, only after it is done."""
    size = 16 * MiB
    path = str(tmp_path / "four.safetensors")
    ref.write_sparse(path, [(f"t{i}", "U8", [size]) for i in range(4)])

    def run(prefetch):
        events = []  # (time, bytes done) from the progress callback, on the reading thread
        finished = []  # time the caller finished working on tensor j
        limit = (3 if prefetch else 2) * size  # one tensor per chunk either way
        for name, t in warpload.iterate_weights(
                path, memory_limit=limit, framework="numpy", prefetch=prefetch,
                progress=lambda done, total: events.append((time.monotonic(), done))):
            assert t.nbytes == size and t[-1] == 0
            time.sleep(0.3)  # the caller's work on the tensor
            finished.append(time.monotonic())
        assert len(finished) == 4
        # When chunk j+1 was read in full, against when the caller finished tensor j.
        read_by = [min(when for when, done in events if done >= (j + 2) * size) for j in range(3)]
        return [read_by[j] < finished[j] for j in range(3)]

    assert run(True) == [True, True, True]
    assert run(False) == [False, False, False]


def test_breaking_off_stops_the_read_ahead(tmp_path):
    path = str(tmp_path / "big.safetensors")
    ref.write_sparse(path, [(f"t{i}", "U8", [512 * MiB]) for i in range(3)])
    base = warpload.live_host_bytes()
    it = warpload.iterate_weights(path, memory_limit=1536 * MiB, framework="numpy", **SLOW)
    start = time.monotonic()
    name, t = next(it)  # t0 read; t1, as large, is now being read ahead
    first = time.monotonic() - start
    assert name == "t0"
    del t
    start = time.monotonic()
    it.close()  # stops t1's read instead of waiting for it
    closing = time.monotonic() - start
    assert closing < 0.5 * first, (first, closing)
    gc.collect()
    assert warpload.live_host_bytes() == base
