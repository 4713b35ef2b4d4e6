"""Multi-rank loading: warpload's byte plan vs the file-per-rank plan, over gloo on one machine.

    PYTHONPATH=build/python /usr/bin/python3 benchmarks/distributed_load.py \
        [--ranks 4] [--size-mib 256] [--files 5] [--dir /tmp/wl-dist-bench]

Writes a checkpoint of `--files` files of uneven sizes (the largest a third of the total),
then, with `--ranks` gloo processes, measures four ways of getting the weights to every rank:

  ours, full      warpload.load_file(process_group=pg): each rank reads 1/world of the bytes,
                  one all-gather
  ours, sharded   warpload.fastsafetensors get_sharded(name, 0) for every tensor: each rank
                  reads 1/world, then receives only its block's missing bytes
  files, full     file-per-rank (fastsafetensors' plan): rank r reads files r, r+W, ... whole,
                  then every tensor is broadcast from its reader
  files, sharded  same reads, then the reader sends each rank its block (what its scatter moves)

and prints, per way: bytes read from storage (sum over ranks, from the ranks' own counters for
ours, file sizes for the baseline), the busiest rank's reads, bytes moved over the process
group (payload received, summed over ranks) and the wall time. Files are in the page cache
after writing, so times measure memory and gloo, not a disk.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import numpy as np


def write_checkpoint(directory, files, size):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
    import st_reference as ref

    os.makedirs(directory, exist_ok=True)
    weights = [files] + list(range(1, files))  # the first file ~ half of the total
    total = sum(weights)
    rng = np.random.default_rng(1)
    paths = []
    for i, w in enumerate(weights):
        nbytes = size * w // total
        rows = max(nbytes // (4 * 1000), 1)
        tensors = [(f"f{i}.w{j}", "F32", [rows // 4 + (j == 3) * (rows % 4), 1000])
                   for j in range(4)]
        path = os.path.join(directory, f"model-{i:05d}-of-{files:05d}.safetensors")
        ref.write(path, [(n, d, s, ref.random_bytes(rng, d, s)) for n, d, s in tensors])
        paths.append(path)
    return paths


def rank_main(rank, world, store, paths, report):
    import torch
    import torch.distributed as dist

    import warpload
    from warpload import fastsafetensors as fst

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    pg = dist.group.WORLD
    out = {}

    def timed(name, fn):
        dist.barrier()
        start = time.monotonic()
        counters = fn()
        dist.barrier()
        out[name] = dict(counters, seconds=time.monotonic() - start)

    def ours_full():
        loader = fst.SafeTensorsFileLoader(pg, "cpu", nogds=True, use_config=False)
        loader.add_filenames({0: paths})
        # load_file's path, with counters: one all-gather after the byte-split reads.
        from warpload import _distributed
        dl = _distributed.make_loader(paths, pg, {"use_config": False})
        dl.load(on_request=False)
        tensors = {n: dl.tensor(n) for n in dl.keys()}
        s = dl.stats
        del tensors
        dl.release()
        return {"read": s["bytes_read"], "received": s["bytes_received"]}

    def ours_sharded():
        loader = fst.SafeTensorsFileLoader(pg, "cpu", nogds=True, use_config=False)
        loader.add_filenames({r: paths[r::world] for r in range(world)})
        fb = loader.copy_files_to_device()
        for name in sorted(loader.get_keys()):
            fb.get_sharded(name, 0)
        s = fb.stats
        fb.close()
        return {"read": s["bytes_read"], "received": s["bytes_received"]}

    def files_plan(sharded):
        mine = paths[rank::world]
        local = warpload.load_file(mine, use_config=False) if mine else {}
        owner = {}
        shapes = {}
        for r in range(world):
            for p in paths[r::world]:
                with warpload.safe_open(p, use_config=False) as f:
                    for n in f.keys():
                        owner[n] = r
                        shapes[n] = f.get_shape(n)
        received = 0
        for name in sorted(owner):
            src = owner[name]
            full = local[name] if src == rank else torch.empty(shapes[name], dtype=torch.float32)
            if not sharded:
                dist.broadcast(full, src=src)
                received += 0 if src == rank else full.numel() * 4
                continue
            size = shapes[name][0]
            block = (size + world - 1) // world
            if src == rank:
                works = [dist.isend(full[q * block:(q + 1) * block].contiguous(), q)
                         for q in range(world) if q != rank and full[q * block:(q + 1) * block].numel()]
                for w in works:
                    w.wait()
            else:
                mine_block = torch.empty([len(range(size)[rank * block:(rank + 1) * block])]
                                         + shapes[name][1:], dtype=torch.float32)
                if mine_block.numel():
                    dist.recv(mine_block, src)
                    received += mine_block.numel() * 4
        read = sum(os.path.getsize(p) for p in mine)
        return {"read": read, "received": received}

    timed("ours, full", ours_full)
    timed("ours, sharded", ours_sharded)
    timed("files, full", lambda: files_plan(False))
    timed("files, sharded", lambda: files_plan(True))
    with open(report, "w") as f:
        json.dump(out, f)
    dist.barrier()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--dir", default="/tmp/wl-dist-bench")
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    ckpt = os.path.join(args.dir, "ckpt")
    if args.rank is not None:
        paths = sorted(os.path.join(ckpt, f) for f in os.listdir(ckpt))
        rank_main(args.rank, args.ranks, args.store, paths,
                  os.path.join(args.dir, f"report-{args.rank}.json"))
        return
    paths = write_checkpoint(ckpt, args.files, args.size_mib << 20)
    data = sum(os.path.getsize(p) for p in paths)
    store = os.path.join(args.dir, f"store-{time.time_ns()}")
    procs = [subprocess.Popen([sys.executable, __file__, "--ranks", str(args.ranks), "--dir",
                               args.dir, "--rank", str(r), "--store", store])
             for r in range(args.ranks)]
    if any(p.wait() != 0 for p in procs):
        sys.exit("a rank failed")
    reports = [json.load(open(os.path.join(args.dir, f"report-{r}.json")))
               for r in range(args.ranks)]
    print(f"checkpoint: {len(paths)} files, {data / 2**20:.1f} MiB "
          f"(largest {max(os.path.getsize(p) for p in paths) / 2**20:.1f} MiB); "
          f"{args.ranks} gloo ranks")
    print(f"{'plan':16} {'read (x ckpt)':>14} {'busiest rank':>13} {'moved (x ckpt)':>15} "
          f"{'wall s':>7}")
    for way in reports[0]:
        read = sum(r[way]["read"] for r in reports)
        busiest = max(r[way]["read"] for r in reports)
        moved = sum(r[way]["received"] for r in reports)
        wall = max(r[way]["seconds"] for r in reports)
        print(f"{way:16} {read / data:14.3f} {busiest / data:13.3f} {moved / data:15.3f} "
              f"{wall:7.2f}")


if __name__ == "__main__":
    main()
