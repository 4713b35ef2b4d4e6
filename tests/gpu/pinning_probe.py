"""What page-locking costs on a GPU machine, and how fast DMA straight out of the page cache is.

    python3 tests/gpu/pinning_probe.py CHECKPOINT_DIR     (tests/gpu/staging_sweep.sh runs it)

Calls the CUDA driver API with ctypes (torch only makes the primary context), so every call
releases the GIL and threads really run in parallel:
  1. ring allocation: cuMemHostAlloc of 256 MiB, against anonymous memory with
     MADV_HUGEPAGE touched then cuMemHostRegister'd, and the cost of freeing each;
  2. DMA from the page cache: T threads each take 64 MiB (or 16 MiB) pieces of the mmapped
     files, cuMemHostRegister them READ_ONLY, cuMemcpyHtoDAsync on their own stream, wait,
     cuMemHostUnregister -- no CPU copy at all. GB/s by T.
Prints markdown tables.
"""

import ctypes
import glob
import mmap
import os
import sys
import threading
import time

import torch

CKPT = sys.argv[1]
FILES = sorted(glob.glob(os.path.join(CKPT, "*.safetensors")))
READ_ONLY = 0x08  # CU_MEMHOSTREGISTER_READ_ONLY
PORTABLE = 0x01
MADV_HUGEPAGE = 14

torch.empty(1, device="cuda:0")
torch.cuda.synchronize()
cu = ctypes.CDLL("libcuda.so.1")
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
for name in ("cuMemHostRegister_v2", "cuMemHostUnregister", "cuMemHostAlloc", "cuMemFreeHost",
             "cuMemcpyHtoDAsync_v2"):
    getattr(cu, name).restype = ctypes.c_int
cu.cuMemHostRegister_v2.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
cu.cuMemHostUnregister.argtypes = [ctypes.c_void_p]
cu.cuMemHostAlloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_uint]
cu.cuMemFreeHost.argtypes = [ctypes.c_void_p]
cu.cuMemcpyHtoDAsync_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t,
                                    ctypes.c_void_p]
cu.cuStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint]
cu.cuStreamSynchronize.argtypes = [ctypes.c_void_p]
cu.cuStreamDestroy_v2.argtypes = [ctypes.c_void_p]
cu.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
cu.cuMemFree_v2.argtypes = [ctypes.c_uint64]
cu.cuCtxGetCurrent.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
cu.cuCtxSetCurrent.argtypes = [ctypes.c_void_p]
ctx = ctypes.c_void_p()
assert cu.cuCtxGetCurrent(ctypes.byref(ctx)) == 0 and ctx.value


def check(result, what):
    if result != 0:
        raise RuntimeError(f"{what}: CUDA error {result}")


def thp():
    try:
        return open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip()
    except OSError:
        return "unknown"


# 1. ring allocation
RING = 256 << 20
print(f"ring allocation, 256 MiB (transparent_hugepage: {thp()})")
print("| how | allocate s | free s |\n|---|---:|---:|")
for label in ("cuMemHostAlloc", "mmap+THP+touch+register"):
    best_alloc, best_free = 1e9, 1e9
    for _ in range(3):
        start = time.perf_counter()
        if label == "cuMemHostAlloc":
            p = ctypes.c_void_p()
            check(cu.cuMemHostAlloc(ctypes.byref(p), RING, PORTABLE), label)
            addr = p.value
        else:
            addr = libc.mmap(None, RING, mmap.PROT_READ | mmap.PROT_WRITE,
                             mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
            libc.madvise(addr, RING, MADV_HUGEPAGE)
            ctypes.memset(addr, 0, RING)
            check(cu.cuMemHostRegister_v2(addr, RING, PORTABLE), label)
        alloc_s = time.perf_counter() - start
        start = time.perf_counter()
        if label == "cuMemHostAlloc":
            check(cu.cuMemFreeHost(addr), "cuMemFreeHost")
        else:
            check(cu.cuMemHostUnregister(addr), "cuMemHostUnregister")
            libc.munmap(addr, RING)
        best_alloc = min(best_alloc, alloc_s)
        best_free = min(best_free, time.perf_counter() - start)
    print(f"| {label} | {best_alloc:.3f} | {best_free:.3f} |")

# 2. DMA straight from the page cache
maps = []
for f in FILES:
    size = os.path.getsize(f) // 4096 * 4096
    fd = os.open(f, os.O_RDONLY)
    maps.append((libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0), size))
    os.close(fd)
total = sum(size for _a, size in maps)
print("\nDMA from the page cache: register READ_ONLY + HtoD + unregister per piece")
print("| piece | threads | GB/s | registration s (sum over threads) |\n|---:|---:|---:|---:|")
for piece in (64 << 20, 16 << 20):
    jobs = [(addr + off, min(piece, size - off)) for addr, size in maps
            for off in range(0, size, piece)]
    for threads in (1, 4, 8, 16):
        lock = threading.Lock()
        cursor = iter(range(len(jobs)))
        reg = [0.0] * threads
        errors = []

        def work(k):
            cu.cuCtxSetCurrent(ctx)
            stream = ctypes.c_void_p()
            check(cu.cuStreamCreate(ctypes.byref(stream), 1), "cuStreamCreate")
            dev = ctypes.c_uint64()
            check(cu.cuMemAlloc_v2(ctypes.byref(dev), piece), "cuMemAlloc")
            try:
                while True:
                    with lock:
                        i = next(cursor, None)
                    if i is None:
                        return
                    addr, n = jobs[i]
                    t0 = time.perf_counter()
                    check(cu.cuMemHostRegister_v2(addr, n, READ_ONLY), "register")
                    reg[k] += time.perf_counter() - t0
                    check(cu.cuMemcpyHtoDAsync_v2(dev.value, addr, n, stream), "HtoD")
                    check(cu.cuStreamSynchronize(stream), "sync")
                    check(cu.cuMemHostUnregister(addr), "unregister")
            except RuntimeError as e:
                errors.append(str(e))
            finally:
                cu.cuMemFree_v2(dev.value)
                cu.cuStreamDestroy_v2(stream)

        start = time.perf_counter()
        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        secs = time.perf_counter() - start
        if errors:
            print(f"| {piece >> 20} MiB | {threads} | failed: {errors[0]} | |")
            break
        print(f"| {piece >> 20} MiB | {threads} | {total / secs / 1e9:.2f} | {sum(reg):.2f} |")
for addr, size in maps:
    libc.munmap(addr, size)
