"""Every dtype and edge case through load_file and safe_open, byte for byte against
st_reference (an independent reader)."""

import os

import numpy as np
import pytest
import torch

import st_reference as ref
import warpload

ALL_DTYPES = list(ref.DTYPE_BITS)


def tensor_bytes(t) -> bytes:
    """The bytes of a returned tensor, as laid out in the file (C order)."""
    if isinstance(t, torch.Tensor):
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        return t.contiguous().numpy().tobytes()
    return np.ascontiguousarray(t).tobytes()


def shape_for(dtype):
    return [4, 6] if ref.DTYPE_BITS[dtype] % 8 == 0 else [4, 4]


def expected_shape(dtype, shape, raw):
    if not raw:
        return list(shape)
    bits = ref.DTYPE_BITS[dtype]
    if bits % 8 == 0:
        return list(shape[:-1]) + [shape[-1] * bits // 8] if shape else [bits // 8]
    if shape and shape[-1] * bits % 8 == 0:
        return list(shape[:-1]) + [shape[-1] * bits // 8]
    return [ref.nbytes_of(dtype, shape)]


def torch_has(dtype):
    names = {"U16": "uint16", "U32": "uint32", "U64": "uint64", "F8_E4M3": "float8_e4m3fn",
             "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
             "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz"}
    if dtype in ("F4", "F6_E2M3", "F6_E3M2"):
        return False
    return hasattr(torch, names[dtype]) if dtype in names else True


def numpy_has(dtype):
    return dtype not in ("BF16", "F4", "F6_E2M3", "F6_E3M2") and not dtype.startswith("F8")


@pytest.fixture(scope="module")
def all_dtypes_file(tmp_path_factory):
    rng = np.random.default_rng(5)
    path = str(tmp_path_factory.mktemp("dtypes") / "all.safetensors")
    tensors = [(f"t.{d.lower()}", d, shape_for(d), ref.random_bytes(rng, d, shape_for(d)))
               for d in ALL_DTYPES]
    ref.write(path, tensors, {"format": "pt"})
    return path


@pytest.mark.parametrize("framework", ["pt", "numpy"])
def test_every_dtype_load_file(all_dtypes_file, framework):
    expected, _ = ref.read(all_dtypes_file)
    got = warpload.load_file(all_dtypes_file, framework=framework)
    assert list(got) == list(expected)  # file order
    for name, (dtype, shape, data) in expected.items():
        t = got[name]
        raw = not (torch_has(dtype) if framework == "pt" else numpy_has(dtype))
        assert list(t.shape) == expected_shape(dtype, shape, raw), name
        assert tensor_bytes(t) == data, name
        assert warpload.stored_dtype(t) == (dtype if raw else None), name
        if raw:
            assert str(t.dtype) in ("torch.uint8", "uint8")


@pytest.mark.parametrize("framework", ["pt", "torch", "numpy", "np"])
def test_every_dtype_safe_open(all_dtypes_file, framework):
    expected, metadata = ref.read(all_dtypes_file)
    with warpload.safe_open(all_dtypes_file, framework=framework) as f:
        assert f.keys() == sorted(expected)
        assert f.offset_keys() == list(expected)
        assert f.metadata() == metadata
        for name, (dtype, shape, data) in expected.items():
            assert f.get_dtype(name) == dtype
            assert f.get_shape(name) == shape
            assert tensor_bytes(f.get_tensor(name)) == data, name
            assert f.get_slice(name).get_dtype() == dtype
            assert f.get_slice(name).get_shape() == shape


def test_dlpack_capsule_for_other_frameworks(all_dtypes_file):
    got = warpload.load_file(all_dtypes_file, framework="jax")
    expected, _ = ref.read(all_dtypes_file)
    for name, capsule in got.items():
        assert type(capsule).__name__ == "PyCapsule"
        dtype = expected[name][0]
        if dtype in ("F32", "I64", "U8", "F16"):
            t = torch.utils.dlpack.from_dlpack(capsule)  # any consumer can take it
            assert tensor_bytes(t) == expected[name][2]


def test_zero_copy_torch_and_numpy(tmp_path):
    path = str(tmp_path / "z.safetensors")
    ref.write(path, [("w", "F32", [64], np.arange(64, dtype=np.float32).tobytes())])
    with warpload.safe_open(path, framework="pt") as f:
        a = f.get_tensor("w")
        b = f.get_tensor("w")
        assert a.data_ptr() == b.data_ptr()  # two views of one buffer: no copy
        assert a.data_ptr() % 64 == 0
    with warpload.safe_open(path, framework="numpy") as f:
        x = f.get_tensor("w")
        y = f.get_tensor("w")
        assert x.__array_interface__["data"][0] == y.__array_interface__["data"][0]


def test_edge_cases_scalar_empty_and_alignment(tmp_path):
    rng = np.random.default_rng(9)
    tensors = [
        ("scalar_f32", "F32", [], rng.bytes(4)),
        ("scalar_f8", "F8_E4M3", [], rng.bytes(1)),
        ("scalar_u16", "U16", [], rng.bytes(2)),
        ("empty", "F32", [0], b""),
        ("empty_2d", "BF16", [3, 0], b""),
        ("odd_u8", "U8", [3], rng.bytes(3)),          # next tensor starts misaligned
        ("after_odd_f64", "F64", [5], rng.bytes(40)),
        ("c64", "C64", [2, 2], rng.bytes(32)),
    ]
    for align in (8, 1):  # reference-padded header, then an unpadded one
        path = str(tmp_path / f"edge{align}.safetensors")
        ref.write(path, tensors, align=align, leading_ws=3 if align == 1 else 0)
        expected, metadata = ref.read(path)
        assert metadata is None
        for framework in ("pt", "numpy"):
            with warpload.safe_open(path, framework=framework) as f:
                assert f.metadata() is None
                for name, (dtype, shape, data) in expected.items():
                    t = f.get_tensor(name)
                    assert tensor_bytes(t) == data, (align, framework, name)
                    if framework == "pt":
                        assert t.data_ptr() % t.element_size() == 0
        got = warpload.load_file(path)
        assert got["scalar_f32"].shape == torch.Size([])
        assert got["empty_2d"].shape == torch.Size([3, 0])
        assert list(got["scalar_f8"].shape) == [1]  # raw bytes: a 0-d tensor gains a byte dim
        assert list(got["scalar_u16"].shape) == ([] if torch_has("U16") else [2])


def test_directory_and_index(tmp_path):
    rng = np.random.default_rng(3)
    d = tmp_path / "model"
    d.mkdir()
    files = []
    weight_map = {}
    for i in range(3):
        name = f"model-0000{i + 1}-of-00003.safetensors"
        ts = [(f"layer{i}.w{j}", "BF16", [8, 4], rng.bytes(64)) for j in range(3)]
        ref.write(str(d / name), ts, {"shard": str(i)})
        files.append(str(d / name))
        weight_map.update({t[0]: name for t in ts})
    import json

    with open(d / "model.safetensors.index.json", "w") as f:
        json.dump({"metadata": {"total_size": 9 * 64}, "weight_map": weight_map}, f)
    expected = ref.read_many(files)
    for source in (str(d), str(d / "model.safetensors.index.json"), files):
        got = warpload.load_file(source)
        assert list(got) == list(expected)
        for name, (_dtype, _shape, data) in expected.items():
            assert tensor_bytes(got[name]) == data
    with warpload.safe_open(str(d)) as f:
        assert f.metadata() == {"shard": "0"}  # merged: first file's value wins


def test_get_slice_numpy_style(tmp_path):
    rng = np.random.default_rng(4)
    path = str(tmp_path / "s.safetensors")
    w = rng.standard_normal((6, 8)).astype(np.float32)
    f8 = rng.bytes(6 * 8)
    u16 = rng.integers(0, 65535, size=(6, 8), dtype=np.uint16)
    ref.write(path, [("w", "F32", [6, 8], w.tobytes()), ("f8", "F8_E5M2", [6, 8], f8),
                     ("u16", "U16", [6, 8], u16.tobytes())])
    f8_np = np.frombuffer(f8, dtype=np.uint8).reshape(6, 8)
    u16_bytes = u16.view(np.uint8).reshape(6, 16)
    for framework in ("pt", "numpy"):
        with warpload.safe_open(path, framework=framework) as f:
            s = f.get_slice("w")
            assert len(s) == 6
            for index in [(slice(1, 4), slice(None)), (slice(None), slice(2, 6)), (2,),
                          (Ellipsis, 3), (slice(0, 6, 2), slice(1, 8, 3)), 4]:
                part = s[index]
                assert tensor_bytes(part) == np.ascontiguousarray(w[index]).tobytes(), index
            raw = f.get_slice("f8")[1:3, 2:5]
            assert tensor_bytes(raw) == f8_np[1:3, 2:5].tobytes()
            part = f.get_slice("u16")[2:4, 1:3]
            if framework == "pt" and not torch_has("U16"):
                # raw bytes: elements are indexed, the last dimension comes back in bytes
                assert list(part.shape) == [2, 4]
                assert tensor_bytes(part) == u16[2:4, 1:3].tobytes()
                assert tensor_bytes(f.get_slice("u16")[3]) == u16[3].tobytes()
                assert tensor_bytes(f.get_slice("u16")[:, 5]) == np.ascontiguousarray(
                    u16_bytes[:, 10:12]).tobytes()
            else:
                assert tensor_bytes(part) == u16[2:4, 1:3].tobytes()


def test_backends_and_options(tmp_path):
    rng = np.random.default_rng(8)
    path = str(tmp_path / "b.safetensors")
    ref.write(path, [(f"t{i}", "F32", [1000 + i], rng.bytes(4 * (1000 + i))) for i in range(20)])
    expected, _ = ref.read(path)
    for backend in warpload.available_backends():
        for direct in (False, True):
            if backend in ("mmap", "auto") and direct:
                continue
            got = warpload.load_file(path, backend=backend, direct=direct, threads=2,
                                     block_size=64 << 10)
            for name, (_d, _s, data) in expected.items():
                assert tensor_bytes(got[name]) == data, (backend, direct, name)
    with pytest.raises(TypeError, match="unexpected option"):
        warpload.load_file(path, bogus=1)


def test_config_file_option(tmp_path):
    rng = np.random.default_rng(2)
    path = str(tmp_path / "c.safetensors")
    ref.write(path, [("x", "I32", [10], rng.bytes(40))])
    config = tmp_path / "config.json"
    config.write_text('{"version": 1, "backend": "posix", "threads": 2}')
    with warpload.safe_open(path, config=str(config)) as f:
        f.get_tensor("x")
        assert f.stats["backend"] == "posix"
        assert f.stats["config"] == str(config)
    with warpload.safe_open(path, config=str(config), use_config=False) as f:
        f.get_tensor("x")
        assert f.stats["config"] == ""


def test_progress_callback(tmp_path):
    path = str(tmp_path / "p.safetensors")
    ref.write(path, [("x", "U8", [1 << 20], bytes(1 << 20))])
    seen = []
    warpload.load_file(path, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (1 << 20, 1 << 20)
    warpload.load_file(path, progress=False)
    warpload.load_file(path, progress=True)  # tqdm bar (python3-tqdm), to stderr
