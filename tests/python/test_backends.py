"""warpload.backends(): the storage layer's backend registry, as Python sees it."""

import numpy as np
import pytest

import st_reference as ref
import warpload

FLAGS = ("takes_direct", "picks_direct", "host_destinations", "device_destinations",
         "stages_when_unusable", "needs_mount", "owns_buffers", "preferred_allocator",
         "baseline", "benchmarked", "tuned", "reads_urls")


def test_every_backend_is_described():
    backends = warpload.backends()
    names = [b["name"] for b in backends]
    assert len(names) == len(set(names)), names
    for b in backends:
        assert isinstance(b["name"], str) and b["name"], b
        assert isinstance(b["summary"], str) and b["summary"], b
        assert isinstance(b["available"], bool), b
        assert isinstance(b["reason"], str), b
        # Available exactly when there is no reason; a reason is a sentence naming the backend.
        assert b["available"] == (b["reason"] == ""), b
        if not b["available"]:
            assert b["name"] in b["reason"], b
        for flag in FLAGS:
            assert isinstance(b[flag], bool), (b["name"], flag)
        assert b["host_destinations"] or b["device_destinations"], b
    assert sum(b["baseline"] for b in backends) == 1


def test_available_backends_are_the_available_host_ones_in_order():
    # The backend that reads only URLs is not one of them (it cannot read local files).
    expected = [b["name"] for b in warpload.backends()
                if b["host_destinations"] and b["available"] and not b["reads_urls"]]
    assert warpload.available_backends() == expected


def test_every_available_host_backend_loads_the_same_bytes(tmp_path):
    rng = np.random.default_rng(3)
    path = str(tmp_path / "r.safetensors")
    ref.write(path, [(f"t{i}", "U8", [777 + i], rng.bytes(777 + i)) for i in range(5)])
    expected, _ = ref.read(path)
    for b in warpload.backends():
        # 3FS needs a mount, "http" URLs: their own suites (test_object_store.py for URLs).
        if not (b["host_destinations"] and b["available"]) or b["needs_mount"] or b["reads_urls"]:
            continue
        for direct in ((False, True) if b["takes_direct"] else (False,)):
            got = warpload.load_file(path, backend=b["name"], direct=direct, framework="numpy")
            for name, (_d, _s, data) in expected.items():
                assert got[name].tobytes() == data, (b["name"], direct, name)


def test_missing_3fs_library_reason_names_it(monkeypatch, tmp_path):
    missing = "/nonexistent/warpload-test/libhf3fs_api_shared.so"
    monkeypatch.setenv("WARPLOAD_HF3FS_LIB", missing)
    by_name = {b["name"]: b for b in warpload.backends()}
    if "3fs" not in by_name:
        pytest.skip("no 3fs backend registered in this build")
    b = by_name["3fs"]
    assert not b["available"]
    assert missing in b["reason"], b["reason"]
    assert "WARPLOAD_HF3FS_LIB" in b["reason"], b["reason"]
    assert "3fs" not in warpload.available_backends()
    path = str(tmp_path / "f.safetensors")
    ref.write(path, [("w", "F32", [4], bytes(16))])
    with pytest.raises(warpload.UnsupportedError, match="WARPLOAD_HF3FS_LIB"):
        warpload.load_file(path, backend="3fs", framework="numpy")
