"""warpload.fastsafetensors, used the way fastsafetensors' own examples use it."""

import inspect
import warnings

import numpy as np
import pytest
import torch

import st_reference as ref
from warpload import fastsafetensors as fst


@pytest.fixture()
def two_files(tmp_path):
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    ref.write(a, [("a0", "F32", [4, 3], np.arange(12, dtype=np.float32).tobytes()),
                  ("a1", "BF16", [2, 5], np.arange(10, dtype=np.int16).tobytes())],
              {"name": "a"})
    ref.write(b, [("b0", "F32", [4, 2], np.arange(100, 108, dtype=np.float32).tobytes())])
    return a, b


def test_run_single_example(two_files):
    a, b = two_files
    loader = fst.SafeTensorsFileLoader(fst.SingleGroup(), torch.device("cpu"), nogds=True,
                                       debug_log=True)
    loader.add_filenames({0: [a, b]})  # {rank: files}
    assert sorted(loader.get_keys()) == ["a0", "a1", "b0"]
    assert loader.get_shape("a0") == [4, 3]
    fb = loader.copy_files_to_device()
    tensor_a0 = fb.get_tensor(tensor_name="a0")
    tensor_b0 = fb.get_tensor(tensor_name="b0")
    cat = torch.concat([tensor_a0, tensor_b0], dim=1)
    assert cat.shape == (4, 5)
    assert fb.get_filename("b0") == b and fb.get_filename("zz") == ""  # fastsafetensors' ""
    assert fb.get_shape("a1") == [2, 5]
    assert fb.get_tensor("a1").dtype == torch.bfloat16
    assert fb.get_tensor("a0", dtype=torch.float64).dtype == torch.float64
    fb.close()
    loader.close()


def test_a_group_of_several_ranks_must_be_torch_distributed(two_files):
    # Sharding over real process groups (gloo, 2 and 4 ranks): test_distributed.py.
    a, _ = two_files

    class FakeGroup:  # rank 1 of 3, but no torch.distributed behind it
        def rank(self):
            return 1

        def size(self):
            return 3

    loader = fst.SafeTensorsFileLoader(FakeGroup(), "cpu", nogds=True)
    loader.add_filenames({1: [a]})
    with pytest.raises(TypeError, match="torch.distributed ProcessGroup"):
        loader.copy_files_to_device()


def test_fastsafe_open_and_parallel_loader(two_files):
    a, b = two_files
    with fst.fastsafe_open([a, b], framework="pt", device="cpu", nogds=True) as f:
        assert sorted(f.keys()) == ["a0", "a1", "b0"]
        assert f.metadata()[a] == {"name": "a"}
        assert f.get_tensor("b0")[3, 1].item() == 107.0
    it = fst.ParallelLoader(None, [a, b], max_concurrent_producers=1, queue_size=0,
                            use_tqdm_on_load=False, device="cpu", nogds=True)
    got = dict(it.iterate_weights())
    it.close()
    assert list(got) == ["a0", "a1", "b0"]
    assert got["a0"][3, 2].item() == 11.0


def test_options_map_and_unknown_ones_warn(two_files):
    a, _ = two_files
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fst.SafeTensorsFileLoader(None, "cpu", nogds=True, max_pinned_memory_in_kb=1024)
        fst.SafeTensorsFileLoader(None, "cpu", nogds=True, backend="posix", threads=2)
    with pytest.warns(UserWarning, match="copier_option"):
        loader = fst.SafeTensorsFileLoader(None, "cpu", nogds=False, copier_option=1)
    loader.add_filenames({0: [a]})
    assert loader.copy_files_to_device().get_tensor("a0").shape == (4, 3)
    three = fst.ThreeFSLoader(None, "cpu", mount_point="/mnt/3fs")
    three.add_filenames({0: [a]})
    with pytest.raises(RuntimeError, match="3FS"):
        three.copy_files_to_device()


def test_signatures_and_defaults_match_fastsafetensors():
    def defaults(fn):
        return {k: v.default for k, v in inspect.signature(fn).parameters.items()
                if v.default is not inspect.Parameter.empty}

    assert list(inspect.signature(fst.SafeTensorsFileLoader).parameters) == [
        "pg", "device", "bbuf_size_kb", "max_threads", "nogds", "set_numa", "disable_cache",
        "debug_log", "framework", "kwargs"]
    assert defaults(fst.SafeTensorsFileLoader) == {
        "device": "cpu", "bbuf_size_kb": 16 * 1024, "max_threads": 16, "nogds": False,
        "set_numa": True, "disable_cache": True, "debug_log": False, "framework": "pytorch"}
    assert defaults(fst.fastsafe_open) == {
        "framework": "pt", "pg": None, "device": "cpu", "nogds": False, "debug_log": False,
        "max_copy_block_size": 16 * 1024 ** 3}
    assert defaults(fst.ParallelLoader)["queue_size"] == 0
    assert defaults(fst.ParallelLoader)["use_tqdm_on_load"] is True
    fb = fst.FilesBufferOnDevice
    assert list(inspect.signature(fb.get_sharded).parameters) == [
        "self", "tensor_name", "dim", "device", "dtype"]
    assert defaults(fst.BaseSafeTensorsFileLoader.copy_files_to_device) == {
        "dtype": fst.DType.AUTO, "use_buf_register": True,
        "max_copy_block_size": 16 * 1024 ** 3}
