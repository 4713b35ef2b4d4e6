"""Drop-in fidelity (issue 14): the fastsafetensors API as upstream's modules expose it, the
safetensors API's backend names, errors, slicing and bytes loading, and Hugging Face model
ids from the local cache. Runs without the upstream checkouts (scripts/upstream-suites runs
those)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import st_reference as ref
import warpload
from warpload import fastsafetensors as fst

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def two_files(tmp_path):
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    ref.write(a, [("a0", "F32", [4, 3], np.arange(12, dtype=np.float32).tobytes()),
                  ("a1", "F16", [2, 5], np.arange(10, dtype=np.float16).tobytes())],
              {"name": "a"})
    ref.write(b, [("b0", "F32", [4, 2], np.arange(100, 108, dtype=np.float32).tobytes())])
    return a, b


# -- fastsafetensors: module paths and types --

def test_upstream_module_paths_import():
    import importlib

    for sub in ("threefs_loader", "copier", "config", "st_types", "loader", "parallel_loader",
                "file_buffer", "auto_loader", "common", "frameworks"):
        importlib.import_module(f"warpload.fastsafetensors.{sub}")
    from warpload.fastsafetensors.threefs_loader import ParallelThreeFSLoader, ThreeFSLoader
    from warpload.fastsafetensors.parallel_loader import ParallelLoader, PipelineParallel
    from warpload.fastsafetensors.st_types import Device, DeviceType, DType
    from warpload.fastsafetensors.copier import (CopierType, ThreeFSFileCopier,
                                                 create_copier_constructor,
                                                 register_copier_constructor)
    from warpload.fastsafetensors import AutoLoader, LoaderConfig, load_config  # noqa: F401
    assert Device.from_str("cuda:1") == Device(DeviceType.CUDA, 1)
    assert Device.from_str("cpu").as_str() == "cpu"
    with pytest.raises(ValueError, match="Unknown device type: tpu"):
        Device.from_str("tpu")
    with pytest.raises(ValueError, match="Invalid index: x"):
        Device.from_str("cuda:x")
    assert DType("F16") is DType.F16 and DType.AUTO.value == "AUTO"
    assert issubclass(ParallelThreeFSLoader, PipelineParallel)
    assert issubclass(ParallelLoader, PipelineParallel)
    assert issubclass(ThreeFSLoader, fst.BaseSafeTensorsFileLoader)
    del CopierType, ThreeFSFileCopier, create_copier_constructor, register_copier_constructor


def test_threefs_signatures_match_upstream():
    import inspect

    from warpload.fastsafetensors.threefs_loader import ParallelThreeFSLoader, ThreeFSLoader

    assert list(inspect.signature(ThreeFSLoader).parameters) == [
        "pg", "device", "mount_point", "debug_log", "disable_cache", "framework", "set_numa",
        "kwargs"]
    assert inspect.signature(ThreeFSLoader).parameters["mount_point"].default == "/mnt/3fs"
    assert list(inspect.signature(ParallelThreeFSLoader).parameters) == [
        "pg", "hf_weights_files", "max_concurrent_producers", "queue_size",
        "use_tqdm_on_load", "device", "debug_log", "framework", "kwargs"]


def test_wrapped_tensors_and_dtype(two_files):
    a, b = two_files
    loader = fst.SafeTensorsFileLoader(None, "cpu", nogds=True)
    loader.add_filenames({0: [a, b]})
    fb = loader.copy_files_to_device(dtype=fst.DType.F64)
    w = fb.get_tensor_wrapped("a0")
    assert isinstance(w, fst.frameworks.TensorBase)
    assert w.dtype is fst.DType.F64 and w.device == fst.Device()
    assert w.get_raw().dtype == torch.float64 and w.get_raw()[3, 2].item() == 11.0
    assert fb.get_sharded_wrapped("a0", -1).get_raw().shape == (4, 3)
    assert fb.get_tensor("a1").dtype == torch.float64
    assert fb.get_tensor("a1", dtype=fst.DType.F16).dtype == torch.float16
    assert fb.get_tensor("a1", dtype=torch.float32).dtype == torch.float32
    d = fb.as_dict({"a0": -1, "b0": -1})
    assert all(isinstance(t, fst.frameworks.TensorBase) for t in d.values())
    cols = fb.get_multi_cols(["a0", "b0"], dim=1)
    assert isinstance(cols, fst.frameworks.TensorBase) and cols.get_raw().shape == (4, 5)
    assert fb.get_filename("nope") == "" and fb.get_filename("b0") == b
    fb.close()
    loader.close()
    with fst.fastsafe_open([a, b], nogds=True) as f:
        t = f.get_tensor_wrapped("b0")
        assert t.dtype is fst.DType.F32 and t.get_raw()[3, 1].item() == 107.0
        assert isinstance(f.get_tensor("b0"), torch.Tensor)


def test_close_pg_none_and_memory_accounting(two_files):
    a, _ = two_files
    op = fst.frameworks.get_framework_op("pytorch")
    loader = fst.SafeTensorsFileLoader(None, "cpu", nogds=True)  # pg=None: a group of one
    assert loader.pg.rank() == 0 and loader.pg.size() == 1
    loader.add_filenames({0: [a]})
    fb = loader.copy_files_to_device()
    assert op.get_mem_used() > 0
    kept = fb.get_tensor("a0")
    fb.close()
    assert op.get_mem_used() == 0
    assert kept[3, 2].item() == 11.0  # unlike upstream, close() never invalidates
    with pytest.raises(ValueError, match="closed"):
        fb.get_tensor("a0")
    loader.close()


def test_copier_registry(two_files):
    from warpload.fastsafetensors.copier import (create_copier_constructor,
                                                 register_copier_constructor)

    for name in ("gds", "nogds", "3fs"):
        assert create_copier_constructor(name, fst.Device()) is not None
    with pytest.raises(KeyError, match=r"Available types: \['gds', 'nogds', '3fs'"):
        create_copier_constructor("nosuch", fst.Device())
    with pytest.raises(KeyError, match="nosuch"):
        fst.BaseSafeTensorsFileLoader(None, "cpu", "nosuch")

    @register_copier_constructor("mine")
    def mine(device, **kwargs):
        return lambda metadata, device, framework: None

    loader = fst.BaseSafeTensorsFileLoader(None, "cpu", "mine")
    loader.add_filenames({0: [two_files[0]]})
    with pytest.raises(warpload.UnsupportedError, match="cannot drive a fastsafetensors copier"):
        loader.copy_files_to_device()
    nogds = fst.BaseSafeTensorsFileLoader(None, "cpu", "nogds")
    nogds.add_filenames({0: [two_files[0]]})
    assert nogds.copy_files_to_device().get_tensor("a0").shape == (4, 3)


def test_pipeline_parallel_and_queue_sizes(two_files):
    a, b = two_files
    for queue_size in (-1, 0, 2):
        loader = fst.SafeTensorsFileLoader(None, "cpu", nogds=True)
        pipe = fst.PipelineParallel(None, loader, [a, b], queue_size=queue_size,
                                    use_tqdm_on_load=False)
        assert pipe.weight_files_batches == [[a], [b]] and pipe.log_prefix == "PG0"
        got = dict(pipe.iterate_weights())
        assert list(got) == ["a0", "a1", "b0"] and got["b0"][3, 1].item() == 107.0
        pipe.close()
    with pytest.raises(ValueError, match="max_concurrent_producers must be 1"):
        fst.PipelineParallel(None, loader, [a], max_concurrent_producers=2)
    pipe = fst.ParallelLoader(None, [a, b], use_tqdm_on_load=False, nogds=True)
    it = pipe.iterate_weights()
    assert next(it)[0] == "a0"
    it.close()  # stopping early stops the read ahead
    pipe.close()


def test_loader_config_format_and_discovery(tmp_path, monkeypatch):
    from warpload.fastsafetensors.config import CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH

    assert (CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH) == ("FASTSAFETENSORS_CONFIG",
                                                      "fastsafetensors.json")
    cfg = fst.LoaderConfig.from_dict({
        "loader": "3fs", "parallel": {"use_pipeline": True, "queue_size": 2, "bogus": 1},
        "debug": {"debug_log": True}, "3fs": {"mount_point": "/m", "framework": "x"},
        "unknown_scalar": 5})
    assert cfg.loader == "3fs" and cfg.debug_log and cfg.queue_size == 2
    assert cfg.get_extension_config("3fs") == {"mount_point": "/m"}
    assert cfg.get_extension_config("none") == {}
    assert cfg.create_parallel_kwargs() == {"max_concurrent_producers": 1, "queue_size": 2,
                                            "use_tqdm_on_load": True}
    assert fst.LoaderConfig().create_parallel_kwargs() == {"queue_size": -1}
    with pytest.raises(ValueError, match="max_concurrent_producers must be 1"):
        fst.LoaderConfig(max_concurrent_producers=2)

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    assert fst.load_config() == fst.LoaderConfig()
    (tmp_path / DEFAULT_CONFIG_PATH).write_text(json.dumps({"loader": "3fs"}))
    assert fst.load_config().loader == "3fs"
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"base": {"copier_type": "nogds"}}))
    monkeypatch.setenv(CONFIG_ENV_VAR, str(other))
    assert fst.load_config().get_extension_config("base") == {"copier_type": "nogds"}
    monkeypatch.setenv(CONFIG_ENV_VAR, str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match="FASTSAFETENSORS_CONFIG"):
        fst.load_config()


def test_auto_loader_reads_the_settings(two_files, tmp_path, monkeypatch):
    a, b = two_files
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"loader": "base", "parallel": {"use_tqdm_on_load": False},
                                    "base": {"copier_type": "nogds", "bbuf_size_kb": 8192}}))
    monkeypatch.setenv("FASTSAFETENSORS_CONFIG", str(settings))
    auto = fst.AutoLoader(None, [a, b], device="cpu")
    assert auto.config.loader == "base"
    assert list(dict(auto.iterate_weights())) == ["a0", "a1", "b0"]
    auto.close()
    settings.write_text(json.dumps({"loader": "s3"}))
    with pytest.raises(ValueError, match="Unknown loader type"):
        fst.AutoLoader(None, [a])
    ext = fst.SafeTensorsFileLoader.process_extension_config({"copier_type": "nogds"})
    assert ext == {"nogds": True}


def test_threefs_mount_point_inference(tmp_path, monkeypatch):
    from warpload.fastsafetensors.threefs_loader import ThreeFSLoader

    mount = tmp_path / "mnt"
    (mount / "3fs-virt").mkdir(parents=True)
    (mount / "models").mkdir()
    path = str(mount / "models" / "x.safetensors")
    monkeypatch.setitem(sys.modules, "fastsafetensor_3fs_reader", None)  # not installed
    assert ThreeFSLoader.process_extension_config(
        {}, hf_weights_files=[path])["mount_point"] == str(mount)
    assert ThreeFSLoader.process_extension_config(
        {"mount_point": "/given"}, hf_weights_files=[path]) == {"mount_point": "/given"}
    assert "mount_point" not in ThreeFSLoader.process_extension_config(
        {}, hf_weights_files=[str(tmp_path / "elsewhere.safetensors")])


def test_parallel_threefs_loader_over_the_usrbio_emulator(two_files, tmp_path):
    build = os.path.dirname(os.path.dirname(os.path.dirname(warpload.__file__)))
    emulator = os.path.join(build, "usrbio-emu", "libhf3fs_api_shared.so")
    if not os.path.exists(emulator):
        pytest.skip("no USRBIO emulator in this build")
    mount = tmp_path / "mnt"
    (mount / "3fs-virt").mkdir(parents=True)
    for name in two_files:
        os.link(name, mount / os.path.basename(name))
    code = textwrap.dedent(f"""
        from warpload.fastsafetensors.threefs_loader import ParallelThreeFSLoader
        files = [{str(mount / 'a.safetensors')!r}, {str(mount / 'b.safetensors')!r}]
        loader = ParallelThreeFSLoader(pg=None, hf_weights_files=files, device="cpu",
                                       use_tqdm_on_load=False)
        got = dict(loader.iterate_weights())
        loader.close()
        print(sorted(got), got["b0"][3, 1].item())
    """)
    env = dict(os.environ, WARPLOAD_HF3FS_LIB=emulator,
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['a0',", "'a1',", "'b0']", "107.0"]


# -- safetensors --

def test_backend_names_and_bad_backend_at_open(two_files):
    a, _ = two_files
    for backend in ("mmap", "pread"):
        with warpload.safe_open(a, framework="pt", backend=backend) as f:
            assert f.get_tensor("a0")[3, 2].item() == 11.0
        assert warpload.load_file(a, backend=backend)["a0"].shape == (4, 3)
    with pytest.raises(warpload.SafetensorError, match="not_a_backend"):
        warpload.safe_open(a, framework="pt", backend="not_a_backend")  # at open
    with pytest.raises(RuntimeError):
        warpload.safe_open(a, backend="not_a_backend")


def test_get_tensors_close_and_not_found(two_files, tmp_path):
    a, _ = two_files
    with warpload.safe_open(a, framework="np") as f:
        tensors = f.get_tensors()
    assert list(tensors) == ["a0", "a1"] and tensors["a0"][3, 2] == 11.0
    for call in (f.keys, f.metadata, lambda: f.get_tensor("a0"), lambda: f.get_slice("a0"),
                 f.get_tensors, lambda: f.get_shape("a0")):
        with pytest.raises(warpload.SafetensorError, match="closed"):
            call()
    with pytest.raises(ValueError):  # and still the ValueError it was
        f.keys()
    os.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        warpload.safe_open("notafile", framework="pt")
    assert str(info.value) == "No such file or directory: notafile"
    assert info.value.errno == 2 and info.value.filename == "notafile"
    with pytest.raises(warpload.SafetensorError):  # a bad file is a SafetensorError too
        ref.write_raw(str(tmp_path / "bad.safetensors"), b"{nope")
        warpload.safe_open(str(tmp_path / "bad.safetensors"))


def test_slicing_errors_as_safetensors(tmp_path):
    path = str(tmp_path / "s.safetensors")
    a = np.arange(50, dtype=np.float32).reshape(10, 5)
    ref.write(path, [("a", "F32", [10, 5], a.tobytes())])
    with warpload.safe_open(path, framework="np") as f:
        s = f.get_slice("a")
        assert s[list()].shape == (0, 5) and s[tuple()].shape == (10, 5)
        assert np.array_equal(s[2:, -5], a[2:, -5])
        cases = [
            ((slice(2, None), -6), "Invalid index -6 for dimension 1 of size 5"),
            ((slice(2, None), 20), "Error during slicing [2:, 20] with shape [10, 5]: index 20 "
                                  "out of bounds for tensor dimension #1 of size 5"),
            (slice(None, 20), "Error during slicing [:20] with shape [10, 5]: index 19 out of "
                             "bounds for tensor dimension #0 of size 10"),
            ((slice(None), slice(None, 20)), "Error during slicing [:, :20] with shape [10, 5]: "
                                            "index 19 out of bounds for tensor dimension #1 "
                                            "of size 5"),
        ]
        for index, message in cases:
            with pytest.raises(warpload.SafetensorError) as info:
                s[index]
            assert str(info.value) == message
            assert isinstance(info.value, IndexError)
        with pytest.raises(warpload.SafetensorError, match="Non empty lists are not implemented"):
            s[[0, 1]]


def test_load_bytes_and_framework_modules(two_files):
    a, _ = two_files
    data = open(a, "rb").read()
    import warpload.numpy
    import warpload.torch

    pt = warpload.torch.load(data)
    assert pt["a0"].dtype == torch.float32 and pt["a0"][3, 2].item() == 11.0
    assert warpload.load(data, framework="np")["a1"].dtype == np.float16
    assert warpload.numpy.load(data)["a0"][3, 2] == 11.0
    assert warpload.numpy.load_file(a)["a0"].dtype == np.float32
    assert warpload.torch.load_file(a, backend="pread")["a1"].dtype == torch.float16
    with pytest.raises(warpload.SafetensorError):
        warpload.load(data[:20])
    with pytest.raises(TypeError):
        warpload.load("not bytes")


# -- Hugging Face model ids --

@pytest.fixture()
def hub(tmp_path, monkeypatch, two_files):
    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny"
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    for path in two_files:
        blob = repo / "blobs" / os.path.basename(path)
        os.link(path, blob)
        os.symlink(blob, snap / os.path.basename(path))
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_model_ids_from_the_hub_cache(hub):
    assert list(warpload.load_file("org/tiny")) == ["a0", "a1", "b0"]
    with warpload.safe_open(f"org/tiny@{COMMIT}", framework="np") as f:
        assert f.keys() == ["a0", "a1", "b0"]
    assert [name for name, _ in warpload.iterate_weights("org/tiny@main")] == ["a0", "a1", "b0"]
    with fst.fastsafe_open("org/tiny", nogds=True) as f:
        assert sorted(f.keys()) == ["a0", "a1", "b0"]
    with pytest.raises(FileNotFoundError) as info:
        warpload.load_file("org/absent")
    assert str(hub / "models--org--absent") in str(info.value)
    with pytest.raises(FileNotFoundError, match="refs/v9"):
        warpload.safe_open("org/tiny@v9")


def test_cli_takes_model_ids(hub):
    build = os.path.dirname(os.path.dirname(os.path.dirname(warpload.__file__)))
    cli = os.path.join(build, "warpload")
    if not os.path.exists(cli):
        pytest.skip("no CLI in this build")
    out = subprocess.run([cli, "inspect", "org/tiny"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert "b0" in out.stdout
