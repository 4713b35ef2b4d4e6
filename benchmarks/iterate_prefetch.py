"""iterate_weights with and without prefetch, against a caller that works on every tensor.

    PYTHONPATH=build/python /usr/bin/python3 benchmarks/iterate_prefetch.py CHECKPOINT
        [--memory-limit-mib 384] [--repeat 3]

The caller's work is a pass over every tensor's bytes (numpy sum of the raw bytes, about what
a conversion or a quantization touches). Files are read once before timing (page cache
warm), so reads are memory copies; prints the best of --repeat runs of each mode and the
consumer's own time (the same loop over tensors already in memory).
"""

import argparse
import glob
import os
import time

import numpy as np

import warpload


def work(t):
    return int(np.add.reduce(t.reshape(-1).view(np.uint8), dtype=np.uint64))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("--memory-limit-mib", type=int, default=384)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    files = sorted(glob.glob(os.path.join(a.checkpoint, "*.safetensors")))
    total = sum(os.path.getsize(f) for f in files)
    for f in files:  # warm the page cache
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass
    limit = a.memory_limit_mib << 20
    results = {}
    for mode in ("plain", "prefetch", "plain", "prefetch") * a.repeat:
        start = time.perf_counter()
        for _name, t in warpload.iterate_weights(files, memory_limit=limit, framework="numpy",
                                                 prefetch=mode == "prefetch"):
            work(t)
        results[mode] = min(results.get(mode, 1e9), time.perf_counter() - start)
    tensors = warpload.load_file(files, framework="numpy")
    start = time.perf_counter()
    for t in tensors.values():
        work(t)
    only_work = time.perf_counter() - start
    gb = total / 1e9
    print(f"{gb:.2f} GB, memory_limit {a.memory_limit_mib} MiB, best of {a.repeat * 2}:")
    print(f"  plain     {results['plain']:.3f} s  {gb / results['plain']:.2f} GB/s")
    print(f"  prefetch  {results['prefetch']:.3f} s  {gb / results['prefetch']:.2f} GB/s "
          f"({results['plain'] / results['prefetch']:.2f}x)")
    print(f"  the caller's work alone (tensors in memory): {only_work:.3f} s")


if __name__ == "__main__":
    main()
