"""One rank of test_distributed.py: joins a gloo process group and runs every scenario on it
(process startup is the slow part, so one group serves all cases). Writes a JSON report.

    python distributed_worker.py RANK WORLD STORE_FILE CHECKPOINT_DIR REPORT TIMEOUT_S

Expected values come from st_reference (an independent reader), never from warpload.
Every scenario runs on every rank in the same order (SPMD); a failed check is recorded, not
raised, so the ranks stay in step.
"""

import datetime
import json
import os
import shutil
import sys
import time
import traceback

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_reference as ref  # noqa: E402

import warpload  # noqa: E402
from warpload import _distributed  # noqa: E402
from warpload import fastsafetensors as fst  # noqa: E402

RANK, WORLD = int(sys.argv[1]), int(sys.argv[2])
STORE, CKPT, REPORT, TIMEOUT = sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6])
ELEM = {"F32": 4, "BF16": 2, "F16": 2, "I64": 8, "U8": 1, "F8_E4M3": 1}

failures = []
facts = {}


def check(what, ok, detail=""):
    if not ok:
        failures.append(f"rank {RANK}: {what} {detail}")


def tbytes(t):
    t = t.contiguous().reshape(-1)
    return (t if t.dtype == torch.uint8 else t.view(torch.uint8)).numpy().tobytes()


def shard_bytes(dtype, shape, data, rank, world, dim):
    """fastsafetensors' rule: blocks of ceil(size / world) along dim, by slicing."""
    arr = np.frombuffer(data, dtype=np.uint8).reshape(list(shape) + [ELEM[dtype]])
    size = shape[dim]
    block = (size + world - 1) // world
    index = [slice(None)] * len(shape) + [slice(None)]
    index[dim] = slice(rank * block, (rank + 1) * block)
    return np.ascontiguousarray(arr[tuple(index)]).tobytes()


def files_in(directory):
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.endswith(".safetensors"))


def scenario(name):
    def wrap(fn):
        def run(*args):
            start = time.monotonic()
            try:
                fn(*args)
            except Exception:
                failures.append(f"rank {RANK}: scenario {name} raised:\n{traceback.format_exc()}")
            facts[f"seconds.{name}"] = round(time.monotonic() - start, 3)
        return run
    return wrap


@scenario("load_file")
def load_file_everywhere(files, expected):
    got = warpload.load_file(files, process_group=dist.group.WORLD)
    check("load_file keys", sorted(got) == sorted(expected))
    for name, (_dtype, shape, data) in expected.items():
        check(f"load_file {name}", tbytes(got[name]) == data)


@scenario("fastsafetensors")
def fastsafetensors_api(files, expected, group, tag):
    rank, world = group.rank(), group.size()
    loader = fst.SafeTensorsFileLoader(group, torch.device("cpu"), nogds=True)
    loader.add_filenames({r: files[r::world] for r in range(world)})  # files round-robin
    fb = loader.copy_files_to_device()
    for name, (dtype, shape, data) in sorted(expected.items()):
        check(f"{tag} get_tensor {name}", tbytes(fb.get_tensor(name)) == data)
        for dim in range(len(shape)):
            before = fb.stats["bytes_received"]
            got = fb.get_sharded(name, dim)
            want = shard_bytes(dtype, shape, data, rank, world, dim)
            check(f"{tag} get_sharded {name} dim {dim}", tbytes(got) == want,
                  f"{len(tbytes(got))} vs {len(want)} bytes")
            # A rank never receives more than its own block.
            check(f"{tag} received for {name} dim {dim}",
                  fb.stats["bytes_received"] - before <= len(want))
        pushed = fb.push_tensor(name, world - 1)
        if rank == world - 1:
            check(f"{tag} push_tensor {name}", pushed is not None and tbytes(pushed) == data)
        else:
            check(f"{tag} push_tensor {name} elsewhere", pushed is None)
    stats = fb.stats
    everyone = [None] * world
    dist.all_gather_object(everyone, stats, group=group)
    facts[f"{tag}.bytes_read"] = [s["bytes_read"] for s in everyone]
    facts[f"{tag}.bytes_received"] = [s["bytes_received"] for s in everyone]
    facts[f"{tag}.data_bytes"] = stats["data_bytes"]
    fb.close()
    loader.close()


@scenario("iterate")
def iterate_everywhere(files, expected):
    seen = {}
    for name, tensor in warpload.iterate_weights(files, process_group=dist.group.WORLD,
                                                 memory_limit=64 << 10):
        seen[name] = tbytes(tensor)
    check("iterate names", sorted(seen) == sorted(expected))
    for name, (_d, _s, data) in expected.items():
        check(f"iterate {name}", seen.get(name) == data)


@scenario("shared_storage")
def shared_storage(files, expected):
    loader = fst.SafeTensorsFileLoader(dist.group.WORLD, "cpu", nogds=True, shared_storage=True)
    loader.add_filenames({0: files})
    fb = loader.copy_files_to_device()
    for name, (dtype, shape, data) in sorted(expected.items()):
        if shape:
            check(f"shared get_sharded {name}", tbytes(fb.get_sharded(name, 0)) ==
                  shard_bytes(dtype, shape, data, RANK, WORLD, 0))
    facts["shared.direct_bytes"] = fb.stats["direct_bytes"]
    fb.close()


@scenario("io_error")
def io_error(files, expected):
    # Each rank its own copy of the checkpoint (own storage); rank 1 reads part of file 1, which shrinks after its
    # header was read, so its read fails.
    mine = os.path.join(CKPT, "..", f"copy-{WORLD}-{RANK}")
    shutil.rmtree(mine, ignore_errors=True)
    os.makedirs(mine)
    copies = [shutil.copy(f, mine) for f in files]
    loader = _distributed.make_loader(copies, dist.group.WORLD, {"use_config": False})
    if RANK == 1:
        with open(copies[1], "r+b") as f:
            f.truncate(os.path.getsize(copies[1]) - 1)
    start = time.monotonic()
    try:
        loader.load(on_request=False)
        check("io_error raised", False, "load() returned")
    except OSError as e:
        facts["io_error.message"] = str(e)
        check("io_error names the file", os.path.basename(copies[1]) in str(e), str(e))
        if RANK != 1:
            check("io_error names rank 1", f"rank 1 of {WORLD}" in str(e), str(e))
    facts["io_error.seconds"] = time.monotonic() - start
    shutil.rmtree(mine, ignore_errors=True)


@scenario("malformed")
def malformed(files, expected):
    mine = os.path.join(CKPT, "..", f"bad-{WORLD}-{RANK}")
    shutil.rmtree(mine, ignore_errors=True)
    os.makedirs(mine)
    copies = [shutil.copy(f, mine) for f in files]
    if RANK == 0:
        ref.write_raw(copies[0], b'{"x": 1}')  # rank 0's copy is malformed
    try:
        warpload.load_file(copies, process_group=dist.group.WORLD)
        check("malformed raised", False, "load_file returned")
    except warpload.InvalidFileError as e:
        facts["malformed.message"] = str(e)
        check("malformed names the file", os.path.basename(copies[0]) in str(e), str(e))
    shutil.rmtree(mine, ignore_errors=True)


@scenario("timeout")
def timeout(files, expected):
    # The last rank arrives late: everyone else fails within the group's timeout.
    if RANK == WORLD - 1:
        time.sleep(TIMEOUT + 3)
    start = time.monotonic()
    try:
        warpload.load_file(files, process_group=dist.group.WORLD)
        check("timeout raised", False, "load_file returned")
    except OSError as e:
        facts["timeout.error"] = f"{type(e).__name__}: {e}"
    facts["timeout.waited"] = time.monotonic() - start


def main():
    dist.init_process_group("gloo", init_method=f"file://{STORE}", rank=RANK,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=TIMEOUT))
    files = files_in(CKPT)
    expected = ref.read_many(files)
    load_file_everywhere(files, expected)
    fastsafetensors_api(files, expected, dist.group.WORLD, "world")
    iterate_everywhere(files, expected)
    shared_storage(files, expected)
    if WORLD == 4:
        # Two tensor-parallel groups of two; every rank creates both (torch's rule).
        groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        fastsafetensors_api(files, expected, groups[RANK // 2], "subgroup")
    io_error(files, expected)
    malformed(files, expected)
    if WORLD == 2:
        timeout(files, expected)
    with open(REPORT, "w") as f:
        json.dump({"failures": failures, "facts": facts}, f)
    # Skip destroy_process_group: after the timeout scenario the group is broken.
    os._exit(0)


if __name__ == "__main__":
    main()
