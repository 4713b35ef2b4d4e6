"""URLs through the Python APIs: load_file, safe_open, iterate_weights and the fastsafetensors
drop-in against real servers on 127.0.0.1 (nginx, s3rver, our fault server;
tests/object_store/servers.py), compared byte for byte with st_reference over the local files
the servers serve. The servers are started for this module and stopped after, even on failure.
"""

import importlib.util
import os

import pytest
import torch

import st_reference as ref
import warpload
from warpload import fastsafetensors as fst

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS_PY = os.path.join(HERE, "..", "object_store", "servers.py")


def _servers_module():
    spec = importlib.util.spec_from_file_location("object_store_servers", SERVERS_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    servers = _servers_module()
    state = str(tmp_path_factory.mktemp("object-store"))
    try:
        info = servers.start(state)
        if info.get("skip"):
            pytest.skip(info["skip"])
        yield info
    finally:
        servers.stop(state)


@pytest.fixture()
def s3(store, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", store["s3_endpoint"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store["key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store["secret"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return "s3://" + store["bucket"]


def expected(store, *relative):
    return ref.read_many([os.path.join(store["data"], r) for r in relative])


def check(got, want):
    assert sorted(got) == sorted(want)
    for name, (_dtype, shape, data) in want.items():
        t = got[name]
        assert list(t.shape) == shape, name
        raw = t.view(torch.uint8) if isinstance(t, torch.Tensor) else t.view("u1")
        assert bytes(raw.numpy() if isinstance(raw, torch.Tensor) else raw) == data, name


SHARDS = [f"model/model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]


def test_load_file_over_http_and_s3(store, s3):
    got = warpload.load_file(store["http"] + "/single.safetensors", framework="numpy")
    check(got, expected(store, "single.safetensors"))
    got = warpload.load_file(store["http"] + "/model/model.safetensors.index.json")
    check(got, expected(store, *SHARDS))
    got = warpload.load_file(s3 + "/model/", framework="pt", connections=3, request_size=65536)
    check(got, expected(store, *SHARDS))
    got = warpload.load_file([s3 + "/shards/part-0.safetensors",
                              s3 + "/shards/part-1.safetensors"], framework="numpy")
    check(got, expected(store, "shards/part-0.safetensors", "shards/part-1.safetensors"))


def test_safe_open_reads_headers_then_tensors(store, s3):
    want = expected(store, "single.safetensors")
    with warpload.safe_open(s3 + "/single.safetensors", framework="pt") as f:
        assert sorted(f.keys()) == sorted(want)
        assert f.get_shape("big") == want["big"][1]
        check({"big": f.get_tensor("big")}, {"big": want["big"]})
        part = f.get_slice("big")[10:20]
        full = f.get_tensor("big")
        assert part.numpy().tobytes() == full[10:20].numpy().tobytes()  # random bits: NaNs


def test_iterate_weights_over_a_prefix_in_bounded_chunks(store, s3):
    want = expected(store, *SHARDS)
    got = dict(warpload.iterate_weights(s3 + "/model", memory_limit=1 << 20,
                                        framework="pt"))
    check({k: v.clone() for k, v in got.items()}, want)


def test_fastsafetensors_dropin_takes_urls(store):
    urls = [store["http"] + "/" + s for s in SHARDS]
    loader = fst.SafeTensorsFileLoader(fst.SingleGroup(), torch.device("cpu"), nogds=True)
    loader.add_filenames({0: urls})
    fb = loader.copy_files_to_device()
    want = expected(store, *SHARDS)
    check({name: fb.get_tensor(name) for name in want}, want)
    fb.close()
    loader.close()


def test_errors_name_the_url(store, s3, monkeypatch):
    missing = store["http"] + "/nothere.safetensors"
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        warpload.load_file(missing)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "NOT-A-KEY")
    with pytest.raises(OSError, match="InvalidAccessKeyId"):
        warpload.load_file(s3 + "/single.safetensors")
    replaced = store["faults"] + "/replace2/single.safetensors"
    with pytest.raises(OSError, match="replaced during the load"):
        warpload.load_file(replaced, request_size=4 << 20, connections=1)
