"""3fs into a device against posix into the same device, same files, same run.

    /usr/bin/python3 benchmarks/iov_ring_bench.py [--build build] [--size 1GiB] [--repeat 5]
        [--cuda LIB] [--hf3fs LIB] [--dir DIR]

Without --cuda/--hf3fs it uses the build's fake CUDA driver and USRBIO emulator (a CPU-only
machine); on a GPU machine pass --cuda /usr/lib/x86_64-linux-gnu/libcuda.so.1 (or leave the
fake out with --cuda ''), keeping the emulator, whose workers pread the page cache.

Generates a checkpoint in DIR (a fake 3FS mount: DIR/3fs-virt), warms the page cache, then runs
`warpload load DIR --device cuda:0 --json` alternately with --backend posix and --backend 3fs,
each in a fresh process, after touching and freeing 2 GiB so that both find the VM's memory in
the same state. Prints the best GB/s of each, the ratio, and each load's host RSS growth beyond
the tensors' bytes (on the fake driver device memory is host memory, so it is subtracted)
against the ring budget: for 3fs the pooled iov ring, for posix the pinned ring.
"""

import argparse
import json
import os
import resource
import subprocess
import sys


IN_PROCESS = '''
import json, sys
from warpload import _warpload
path, repeat = sys.argv[1], int(sys.argv[2])
best = {}
for i in range(repeat + 1):
    for backend in ("posix", "3fs"):
        loader = _warpload._Loader(backend=backend, device="cuda:0", use_config=False)
        loader.add(path)
        gbps = loader.load()["gbps"]  # the read phase, as the CLI's gbps
        del loader
        if i > 0:
            best[backend] = max(best.get(backend, 0), gbps)
print(json.dumps(best))
'''


def touch_and_free(gib=2):
    block = bytearray(gib << 30)
    for i in range(0, len(block), 4096):
        block[i] = 1
    del block


def load(cli, path, backend, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([cli, "load", path, "--backend", backend, "--device", "cuda:0",
                          "--json"], env=env, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = json.loads(out.stdout)
    # CPU seconds of the whole process (start-up and context included): steadier than wall
    # time on a shared machine.
    r["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build")
    p.add_argument("--size", default="1GiB")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--dir", default="/tmp/warpload-iov-ring")
    p.add_argument("--cuda", default=None, help="libcuda to use ('' = the system's)")
    p.add_argument("--hf3fs", default=None)
    a = p.parse_args()
    cli = os.path.join(a.build, "warpload")
    cuda = a.cuda if a.cuda is not None else os.path.join(a.build, "fake-cuda", "libcuda.so.1")
    hf3fs = a.hf3fs or os.path.join(a.build, "usrbio-emu", "libhf3fs_api_shared.so")
    fake = "fake-cuda" in cuda
    env = dict(os.environ, WARPLOAD_HF3FS_LIB=os.path.abspath(hf3fs), WARPLOAD_CONFIG="",
               XDG_CONFIG_HOME="/nonexistent")
    if cuda:
        env["WARPLOAD_CUDA_LIB"] = os.path.abspath(cuda)
    if not os.path.isdir(os.path.join(a.dir, "3fs-virt")):
        subprocess.run([cli, "gen", a.dir, "--size", a.size, "--shards", "4"], check=True,
                       stdout=subprocess.DEVNULL)
        os.makedirs(os.path.join(a.dir, "3fs-virt"), exist_ok=True)
    for name in sorted(os.listdir(a.dir)):  # page cache warm: both read the same cached bytes
        if name.endswith(".safetensors"):
            with open(os.path.join(a.dir, name), "rb") as f:
                while f.read(64 << 20):
                    pass
    best = {}
    over = {}
    cpu = {}
    for _ in range(a.repeat):
        for backend in ("posix", "3fs"):
            touch_and_free()
            r = load(cli, a.dir, backend, env)
            if r["gbps"] > best.get(backend, {"gbps": 0})["gbps"]:
                best[backend] = r
            growth = r["host_rss_growth_bytes"] - (r["bytes"] if fake else 0)
            over[backend] = max(over.get(backend, 0), growth)
            cpu[backend] = min(cpu.get(backend, 1e9), r["cpu_seconds"])
    # The same comparison inside one process (a server loading more than one checkpoint, or
    # a benchmark loop): the 3fs pool's iovs are made, faulted and registered once, before the
    # first timed load; each backend's first load is untimed.
    in_process = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, a.dir, str(a.repeat)],
        env=dict(env, PYTHONPATH=os.path.join(a.build, "python")), capture_output=True,
        text=True)
    steady = json.loads(in_process.stdout) if in_process.returncode == 0 else None
    budget = best["posix"]["staging_bytes"]
    ring = min(budget, 64 << 20)  # default ring: 16 x 4 MiB within the budget
    print(f"{best['posix']['bytes'] / 1e9:.2f} GB into cuda:0 "
          f"({'fake driver' if fake else 'real driver'}), best of {a.repeat} each, alternating:")
    for backend in ("posix", "3fs"):
        r = best[backend]
        print(f"  {backend:5s} {r['gbps']:6.2f} GB/s  {cpu[backend]:.2f} CPU s (least)  "
              f"ring: {r.get('staging_memory', '')}  "
              f"host RSS growth beyond tensors (worst run): {over[backend] / 2**20:.0f} MiB "
              f"({over[backend] / ring:.2f} x the {ring >> 20} MiB ring)")
    print(f"  3fs / posix = {best['3fs']['gbps'] / best['posix']['gbps']:.2f}")
    if steady is None:
        print(f"  in one process: failed ({in_process.stderr.strip()[-200:]})")
    else:
        print(f"in one process (pool kept), best of {a.repeat} each, alternating: "
              f"posix {steady['posix']:.2f} GB/s, 3fs {steady['3fs']:.2f} GB/s, "
              f"3fs / posix = {steady['3fs'] / steady['posix']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
