#!/usr/bin/env python3
"""Python-side load throughput: warpload.load_file against the CLI and a NumPy
memmap-and-copy loader (what safetensors' safe_open does), cold and warm, in one run.

    PYTHONPATH=build/python /usr/bin/python3 benchmarks/python_load.py /tmp/demo2g \
        --cli build/warpload

Cold runs evict the files' pages first (posix_fadvise DONTNEED). Prints the best of
--repeat runs per row, in GB/s (10^9 bytes per second), and the import time of warpload.
"""

import argparse
import glob
import json
import os
import re
import struct
import subprocess
import sys
import time


def files_of(path):
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(path, "*.safetensors")))
    return [path]


def evict(files):
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cache(files):
    """Reads the files once so they sit in the page cache. Needed before warm runs: a cold run
    through `auto` reads with O_DIRECT and leaves nothing cached behind."""
    for f in files:
        with open(f, "rb", buffering=0) as h:
            while h.read(64 << 20):
                pass


def memmap_and_copy(files):
    """One np.memmap per file, each tensor copied out into fresh memory."""
    import numpy as np

    out = {}
    for f in files:
        with open(f, "rb") as h:
            (n,) = struct.unpack("<Q", h.read(8))
            header = json.loads(h.read(n))
        header.pop("__metadata__", None)
        mm = np.memmap(f, dtype=np.uint8, mode="r", offset=8 + n)
        for name, e in header.items():
            b, end = e["data_offsets"]
            out[name] = np.array(mm[b:end])  # the copy
        del mm
    return out


def time_it(fn, files, cold, repeat):
    best = None
    for _ in range(repeat):
        if cold:
            evict(files)
        else:
            cache(files)
        t = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t
        del result
        best = elapsed if best is None else min(best, elapsed)
    return best


def cli_gbps(cli, path, cold, repeat):
    best = 0.0
    for _ in range(repeat):
        if cold:
            evict(files_of(path))
        else:
            cache(files_of(path))
        out = subprocess.run([cli, "load", path], capture_output=True, text=True, check=True)
        m = re.search(r"([0-9.]+) GB/s", out.stdout + out.stderr)
        if m:
            best = max(best, float(m.group(1)))
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--cli", default=None, help="the warpload CLI, for its GB/s")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    files = files_of(args.path)
    size = sum(os.path.getsize(f) for f in files)

    t = time.perf_counter()
    import warpload  # noqa: F401  (first import in this process)
    import_ms = (time.perf_counter() - t) * 1000
    print(f"import warpload: {import_ms:.0f} ms (torch loaded: {'torch' in sys.modules})")
    import numpy  # noqa: F401  (import cost kept out of the timings)

    rows = []
    for cold in (True, False):
        label = "cold" if cold else "warm"
        wl = time_it(lambda: warpload.load_file(args.path, framework="numpy", progress=False),
                     files, cold, args.repeat)
        mm = time_it(lambda: memmap_and_copy(files), files, cold, args.repeat)
        cli = cli_gbps(args.cli, args.path, cold, args.repeat) if args.cli else 0.0
        rows.append((label, size / wl / 1e9, size / mm / 1e9, cli))
    print(f"{'':5} {'load_file GB/s':>15} {'memmap+copy GB/s':>17} {'CLI GB/s':>9} "
          f"{'vs CLI':>7} {'x memmap':>9}")
    for label, wl, mm, cli in rows:
        vs = f"{wl / cli * 100:.0f}%" if cli else "-"
        print(f"{label:5} {wl:15.2f} {mm:17.2f} {cli:9.2f} {vs:>7} {wl / mm:8.2f}x")


if __name__ == "__main__":
    main()
