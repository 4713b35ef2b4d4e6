"""Multi-rank loading over torch.distributed (gloo, CPU): 2 and 4 processes on this machine.

Each job is one process group running every scenario of distributed_worker.py (process and
group startup dominate, so they are shared); the two jobs run concurrently.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import st_reference as ref

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = {2: 4, 4: 20}  # the process groups' timeouts


def write_checkpoint(directory, files):
    """Uneven shapes, a 0-d and an empty tensor, 1-byte raw dtype, and a file larger than all
    the others together; `files` of them (3 for 4 ranks: one file fewer than ranks)."""
    rng = np.random.default_rng(7)
    specs = [
        [("a.w", "BF16", [37, 19]), ("a.scalar", "F32", []), ("a.empty", "U8", [0, 5]),
         ("a.i64", "I64", [5]), ("a.f8", "F8_E4M3", [9, 7])],
        [("b.big", "U8", [400000]), ("b.f32", "F32", [123, 77])],
        [("c.h", "F16", [7, 3, 5])],
        [("d.w", "F32", [64, 1024])],
    ][:files]
    os.makedirs(directory)
    for i, tensors in enumerate(specs):
        ref.write(os.path.join(directory, f"model-{i:05d}.safetensors"),
                  [(n, d, s, ref.random_bytes(rng, d, s)) for n, d, s in tensors])
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))


def start_job(tmp_path, world, files):
    ckpt = str(tmp_path / f"ckpt-{world}")
    write_checkpoint(ckpt, files)
    store = str(tmp_path / f"store-{world}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = []
    for rank in range(world):
        report = str(tmp_path / f"report-{world}-{rank}.json")
        procs.append((report, subprocess.Popen(
            [sys.executable, os.path.join(HERE, "distributed_worker.py"), str(rank), str(world),
             store, ckpt, report, str(TIMEOUT_S[world])],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    return ckpt, procs


def finish_job(procs, limit):
    reports = []
    for report, proc in procs:
        try:
            out, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            for _r, p in procs:
                p.kill()
            pytest.fail(f"a rank did not finish within {limit} s")
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
        with open(report) as f:
            reports.append(json.load(f))
    return reports


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    two = start_job(tmp, 2, 4)
    four = start_job(tmp, 4, 3)
    return {2: (two[0], finish_job(two[1], 120)), 4: (four[0], finish_job(four[1], 120))}


def data_bytes(ckpt):
    total = 0
    for name in os.listdir(ckpt):
        tensors, _ = ref.read(os.path.join(ckpt, name))
        total += sum(len(data) for _d, _s, data in tensors.values())
    return total


@pytest.mark.parametrize("world", [2, 4])
def test_every_rank_gets_what_it_asked_for(jobs, world):
    _ckpt, reports = jobs[world]
    failures = [f for r in reports for f in r["failures"]]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("world", [2, 4])
def test_each_byte_is_read_by_exactly_one_rank(jobs, world):
    ckpt, reports = jobs[world]
    facts = reports[0]["facts"]
    read = facts["world.bytes_read"]
    assert len(read) == world
    # The ranks' own counters: buffered reads, so exactly the data bytes, split evenly.
    assert sum(read) == data_bytes(ckpt) == facts["world.data_bytes"]
    # Slots are whole 4 KiB granules: the last rank is short by at most one per rank, and
    # each file boundary adds at most one.
    assert max(read) - min(read) <= 4096 * (world + len(os.listdir(ckpt)) + 1)
    if world == 4:
        assert sum(facts["subgroup.bytes_read"]) == data_bytes(ckpt)


def test_shared_storage_reads_dim0_shards_directly(jobs):
    _ckpt, reports = jobs[2]
    assert sum(r["facts"]["shared.direct_bytes"] for r in reports) > 0


@pytest.mark.parametrize("world", [2, 4])
def test_a_failing_rank_fails_every_rank(jobs, world):
    _ckpt, reports = jobs[world]
    for rank, r in enumerate(reports):
        facts = r["facts"]
        assert "io_error.message" in facts, f"rank {rank} did not fail on rank 1's I/O error"
        assert facts["io_error.seconds"] < TIMEOUT_S[world]  # the agreement, not a timeout
        assert "malformed.message" in facts, f"rank {rank} did not fail on the malformed file"


def test_a_missing_rank_times_out_clearly(jobs):
    _ckpt, reports = jobs[2]
    waiting = reports[0]["facts"]
    assert waiting["timeout.error"].startswith("TimeoutError"), waiting["timeout.error"]
    assert "rank 0 of 2" in waiting["timeout.error"]
    assert waiting["timeout.waited"] < TIMEOUT_S[2] + 5
    assert "timeout.error" in reports[1]["facts"]  # the late rank fails too
