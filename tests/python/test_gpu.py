"""Device loads from Python on a real CUDA GPU.

tests/gpu/run.sh runs this file on the lent GPU machine; everywhere else (CI, this VM) every
test skips: there is no CUDA device. Expected bytes come from st_reference (an independent
reader), read back from the device with torch.
"""

import datetime

import numpy as np
import pytest

import st_reference as ref
import warpload

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or not warpload.cuda_available(),
    reason="needs a CUDA device (tests/gpu/run.sh runs this on the GPU machine)")

SPECS = [("f32", "F32", [33, 17]), ("bf16", "BF16", [8, 9]), ("f16", "F16", [5]),
         ("i64", "I64", [3, 3]), ("empty", "U8", [0, 4]), ("scalar", "F64", []),
         ("flags", "BOOL", [7]), ("f8", "F8_E4M3", [4, 4]), ("i32", "I32", [10]),
         ("big", "U8", [3 << 20])]


def host_bytes(t):
    t = t.detach().to("cpu").contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return (t if t.dtype == torch.uint8 else t.view(torch.uint8)).numpy().tobytes()


@pytest.fixture()
def ckpt(tmp_path):
    rng = np.random.default_rng(11)
    files = []
    for i, chunk in enumerate((SPECS[:5], SPECS[5:])):
        path = str(tmp_path / f"model-{i:05d}.safetensors")
        ref.write(path, [(n, d, s, ref.random_bytes(rng, d, s)) for n, d, s in chunk])
        files.append(path)
    return files, ref.read_many(files)


def expect_on_cuda(got, expected):
    assert sorted(got) == sorted(expected)
    for name, (_dtype, shape, data) in expected.items():
        t = got[name]
        assert t.device == torch.device("cuda", 0), name
        assert list(t.shape) == shape, name
        assert host_bytes(t) == data, name


def test_load_file_puts_every_dtype_on_the_device_through_torchs_allocator(ckpt):
    files, expected = ckpt
    data = sum(len(d) for _t, _s, d in expected.values())
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated(0)
    got = warpload.load_file(files, device="cuda:0")
    used = torch.cuda.memory_allocated(0) - before
    expect_on_cuda(got, expected)
    # torch's allocator holds the buffers (its accounting sees them) and no second copy.
    assert data <= used <= data * 1.01 + (1 << 20), (data, used)
    del got
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated(0) == before


def test_safe_open_on_the_device(ckpt):
    files, expected = ckpt
    with warpload.safe_open(files[1], framework="pt", device="cuda:0") as f:
        assert sorted(f.keys()) == ["big", "f8", "flags", "i32", "scalar"]
        t = f.get_tensor("i32")
        assert t.device == torch.device("cuda", 0)
        assert host_bytes(t) == expected["i32"][2]
        part = f.get_slice("big")[1000:5000]
        assert part.device.type == "cuda"
        assert host_bytes(part) == expected["big"][2][1000:5000]


@pytest.mark.parametrize("nogds", [True, False])
def test_fastsafetensors_loader_on_the_device(ckpt, nogds):
    files, expected = ckpt
    from warpload import fastsafetensors as fst
    loader = fst.SafeTensorsFileLoader(fst.SingleGroup(), torch.device("cuda:0"), nogds=nogds)
    loader.add_filenames({0: files})
    fb = loader.copy_files_to_device()
    got = {name: fb.get_tensor(name) for name in expected}
    expect_on_cuda(got, expected)
    fb.close()
    loader.close()


def test_iterate_weights_to_the_device(ckpt):
    files, expected = ckpt
    got = dict(warpload.iterate_weights(files, device="cuda:0", memory_limit=4 << 20))
    expect_on_cuda(got, expected)


@pytest.mark.skipif(not torch.distributed.is_available() or
                    not torch.distributed.is_nccl_available(), reason="no NCCL in torch")
def test_an_nccl_process_group_of_one(ckpt, tmp_path):
    import torch.distributed as dist
    files, expected = ckpt
    from warpload import fastsafetensors as fst
    torch.cuda.set_device(0)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))
    try:
        got = warpload.load_file(files, device="cuda:0", process_group=dist.group.WORLD)
        expect_on_cuda(got, expected)
        loader = fst.SafeTensorsFileLoader(dist.group.WORLD, torch.device("cuda:0"), nogds=True)
        loader.add_filenames({0: files})
        fb = loader.copy_files_to_device()
        shard = fb.get_sharded("f32", 1)
        assert shard.device.type == "cuda"
        assert host_bytes(shard) == expected["f32"][2]
        fb.close()
        loader.close()
    finally:
        dist.destroy_process_group()
