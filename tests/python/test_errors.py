"""Error mapping: malformed files -> ValueError (warpload.InvalidFileError) naming file and
tensor; missing files -> FileNotFoundError; I/O failures -> OSError with errno; no GPU / no
3FS -> RuntimeError naming what is missing."""

import errno
import json
import os
import struct

import numpy as np
import pytest

import st_reference as ref
import warpload


def good_header(**override):
    h = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    h.update(override)
    return json.dumps(h).encode()


# (case, header bytes, data, length prefix override, rule, words the message must name)
CASES = [
    ("too_small", None, b"", None, "HeaderTooSmall", []),
    ("too_large", b"{}", b"", 100_000_001, "HeaderTooLarge", []),
    ("bad_length", b"{}", b"", 500, "InvalidHeaderLength", []),
    ("not_utf8", b'{"a\xff": 1}', b"", None, "InvalidHeader", []),
    ("not_json", b'{"a": ', b"", None, "InvalidHeaderDeserialization", []),
    ("unknown_dtype", good_header(a={"dtype": "F31", "shape": [2], "data_offsets": [0, 8]}),
     bytes(16), None, "InvalidHeaderDeserialization", []),
    ("duplicate_key",
     b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
     b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}', bytes(2), None,
     "DuplicateName", ["'a'"]),
    ("gap", good_header(b={"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}), bytes(20),
     None, "InvalidOffset", ["'b'"]),
    ("overflow", good_header(b={"dtype": "F32", "shape": [2**62, 2**62],
                                "data_offsets": [8, 16]}), bytes(16), None,
     "ValidationOverflow", ["'b'"]),
    ("misaligned", good_header(b={"dtype": "F4", "shape": [3], "data_offsets": [8, 16]}),
     bytes(16), None, "MisalignedSlice", ["'b'"]),
    ("wrong_size", good_header(b={"dtype": "F32", "shape": [3], "data_offsets": [8, 16]}),
     bytes(16), None, "TensorInvalidInfo", ["'b'"]),
    ("incomplete", good_header(), bytes(17), None, "MetadataIncompleteBuffer", []),
]


@pytest.mark.parametrize("case,header,data,length,rule,words", CASES, ids=[c[0] for c in CASES])
def test_malformed_files_raise_value_error(tmp_path, case, header, data, length, rule, words):
    path = str(tmp_path / f"{case}.safetensors")
    if header is None:
        with open(path, "wb") as f:
            f.write(b"\x01\x02\x03")
    else:
        ref.write_raw(path, header, data, length)
    for call in (lambda: warpload.load_file(path), lambda: warpload.safe_open(path),
                 lambda: list(warpload.iterate_weights(path))):
        with pytest.raises(ValueError) as info:
            call()
        assert isinstance(info.value, warpload.InvalidFileError)
        message = str(info.value)
        assert path in message or os.path.basename(path) in message, message
        for word in words:
            assert word in message, message
        assert info.value.rule.replace("_", "").lower() == rule.lower() or \
            rule.lower() in info.value.rule.replace("_", "").lower(), info.value.rule


def test_duplicate_tensor_across_files(tmp_path):
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    ref.write(a, [("w", "U8", [1], b"\x01")])
    ref.write(b, [("w", "U8", [1], b"\x02")])
    with pytest.raises(ValueError, match="'w'") as info:
        warpload.load_file([a, b])
    assert "b.safetensors" in str(info.value)


def test_bad_index(tmp_path):
    ref.write(str(tmp_path / "x.safetensors"), [("w", "U8", [1], b"\x01")])
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "x.safetensors", "v": "x.safetensors"}}))
    with pytest.raises(ValueError, match="index"):
        warpload.load_file(str(index))


def test_missing_file_and_tensor(tmp_path):
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError) as info:
        warpload.load_file(missing)
    assert info.value.errno == errno.ENOENT and "nope.safetensors" in str(info.value)
    with pytest.raises(FileNotFoundError):
        warpload.safe_open(missing)
    path = str(tmp_path / "ok.safetensors")
    ref.write(path, [("w", "U8", [1], b"\x01")])
    with warpload.safe_open(path) as f, pytest.raises(KeyError, match="'v'"):
        f.get_tensor("v")


def test_io_error_is_oserror_with_errno(tmp_path):
    path = str(tmp_path / "shrinks.safetensors")
    ref.write(path, [("w", "U8", [4096], bytes(4096))])
    f = warpload.safe_open(path)  # header read and validated here
    with open(path, "r+b") as handle:
        handle.truncate(100)  # the file changes under the loader
    with pytest.raises(OSError) as info:
        f.get_tensor("w")
    assert info.value.errno is not None and "shrinks.safetensors" in str(info.value)
    assert not isinstance(info.value, FileNotFoundError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_is_oserror(tmp_path):
    path = str(tmp_path / "secret.safetensors")
    ref.write(path, [("w", "U8", [1], b"\x01")])
    os.chmod(path, 0)
    with pytest.raises(PermissionError) as info:
        warpload.load_file(path)
    assert info.value.errno == errno.EACCES


def test_missing_gpu_is_runtime_error(tmp_path):
    if warpload.cuda_available():
        pytest.skip("a CUDA driver is present")
    path = str(tmp_path / "g.safetensors")
    ref.write(path, [("w", "F32", [4], bytes(16))])
    for call in (lambda: warpload.load_file(path, device="cuda:0"),
                 lambda: warpload.safe_open(path, device="cuda").get_tensor("w")):
        with pytest.raises(RuntimeError) as info:
            call()
        assert isinstance(info.value, warpload.UnsupportedError)
        assert "libcuda" in str(info.value) or "CUDA" in str(info.value), str(info.value)


def test_missing_3fs_is_runtime_error(tmp_path):
    path = str(tmp_path / "f.safetensors")
    ref.write(path, [("w", "F32", [4], bytes(16))])
    env = os.environ.get("WARPLOAD_HF3FS_LIB")
    if env:
        pytest.skip("a 3FS client library is configured")
    with pytest.raises(RuntimeError) as info:
        warpload.load_file(path, backend="3fs")
    assert "3fs" in str(info.value).lower() or "hf3fs" in str(info.value), str(info.value)


def test_bad_arguments(tmp_path):
    path = str(tmp_path / "a.safetensors")
    ref.write(path, [("w", "F32", [4], bytes(16))])
    with pytest.raises(ValueError):
        warpload.load_file(path, device="tpu:0")
    with pytest.raises(RuntimeError, match="nosuch"):
        warpload.load_file(path, backend="nosuch")
    with pytest.raises(ValueError):
        list(warpload.iterate_weights(path, memory_limit=0))
