"""Tensor lifetime: tensors keep their buffers alive whatever the order of close() and del;
close() never invalidates (it drops warpload's references); repeated loads do not leak."""

import gc

import numpy as np
import pytest
import torch

import st_reference as ref
import warpload

MiB = 1 << 20


@pytest.fixture()
def eight_mib(tmp_path):
    path = str(tmp_path / "m.safetensors")
    rng = np.random.default_rng(11)
    ref.write(path, [("a", "F32", [MiB], rng.bytes(4 * MiB)), ("b", "U8", [4 * MiB],
                                                                 rng.bytes(4 * MiB))])
    return path


def settle():
    gc.collect()
    return warpload.live_host_bytes()


@pytest.mark.parametrize("framework", ["pt", "numpy", "capsule"])
def test_close_before_del_keeps_tensor_valid(eight_mib, framework):
    base = settle()
    expected, _ = ref.read(eight_mib)
    f = warpload.safe_open(eight_mib, framework=framework)
    t = f.get_tensor("b")
    assert warpload.live_host_bytes() - base >= 8 * MiB
    f.close()
    f.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        f.get_tensor("a")
    # the tensor still owns the buffer: reading it is safe and gives the file's bytes
    if framework == "capsule":
        t = torch.utils.dlpack.from_dlpack(t)
    data = t.numpy().tobytes() if isinstance(t, torch.Tensor) else t.tobytes()
    assert data == expected["b"][2]
    assert warpload.live_host_bytes() - base >= 4 * MiB
    del t, f
    assert settle() == base


def test_del_handle_first_then_tensor(eight_mib):
    base = settle()
    with warpload.safe_open(eight_mib) as f:
        a = f.get_tensor("a")
        view = a[10:20]
    del f
    gc.collect()
    assert float(view.sum()) == float(a[10:20].sum())
    del a
    assert settle() > base  # the slice alone keeps the buffer
    del view
    assert settle() == base


def test_tensors_outlive_load_file_and_fastsafetensors(eight_mib):
    from warpload.fastsafetensors import SafeTensorsFileLoader, SingleGroup

    base = settle()
    expected, _ = ref.read(eight_mib)
    loader = SafeTensorsFileLoader(SingleGroup(), "cpu", nogds=True)
    loader.add_filenames({0: [eight_mib]})
    fb = loader.copy_files_to_device()
    t = fb.get_tensor("a")
    fb.close()
    loader.close()
    assert t.numpy().tobytes() == expected["a"][2]
    with pytest.raises(ValueError, match="closed"):
        fb.get_tensor("a")
    del t
    assert settle() == base


def test_many_loads_in_a_loop_do_not_leak(eight_mib):
    def one_round():
        tensors = warpload.load_file(eight_mib)
        assert tensors["b"].numel() == 4 * MiB
        with warpload.safe_open(eight_mib, framework="numpy") as f:
            f.get_slice("a")[3:5]
        for _name, t in warpload.iterate_weights(eight_mib, memory_limit=6 * MiB):
            del t

    base = settle()
    for _ in range(5):
        one_round()
    settle()
    rss_before = ref.rss_bytes()
    for _ in range(40):
        one_round()
    assert settle() == base
    growth = ref.rss_bytes() - rss_before
    assert growth < 16 * MiB, f"RSS grew by {growth / MiB:.1f} MiB over 40 rounds"


def test_python_allocator_holds_memory(tmp_path):
    """The allocator hook device loads use with torch (here on the CPU): the memory comes from
    a Python object that the buffer keeps alive, and is dropped with the GIL taken."""
    from warpload import _warpload

    path = str(tmp_path / "p.safetensors")
    ref.write(path, [("w", "F32", [1000], np.arange(1000, dtype=np.float32).tobytes())])
    blocks = []

    def allocate(nbytes):
        block = torch.empty(nbytes, dtype=torch.uint8)
        blocks.append(block)
        return block, block.data_ptr()

    loader = _warpload._Loader(allocator=allocate, use_config=False)
    loader.add(path)
    loader.load()
    t = torch.utils.dlpack.from_dlpack(loader.tensor("w").to_capsule())
    start = blocks[0].data_ptr()
    assert start <= t.data_ptr() < start + blocks[0].numel()
    del loader
    blocks.clear()
    gc.collect()
    assert t[999].item() == 999.0
