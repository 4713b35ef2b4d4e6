"""The 3FS iov pool behind device loads, from Python: held after a load, freed by
warpload.release_staging_pools() and at interpreter exit (after a KeyboardInterrupt too).
Runs in child interpreters with the fake CUDA driver and the USRBIO emulator of this build
(docs/architecture.md, "Ring memory")."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import st_reference as ref
import warpload


def _doubles():
    build = os.path.dirname(os.path.dirname(os.path.dirname(warpload.__file__)))
    cuda = os.path.join(build, "fake-cuda", "libcuda.so.1")
    emulator = os.path.join(build, "usrbio-emu", "libhf3fs_api_shared.so")
    if not (os.path.exists(cuda) and os.path.exists(emulator)):
        pytest.skip("no fake CUDA driver or USRBIO emulator in this build")
    return cuda, emulator


def _mount(tmp_path):
    mount = tmp_path / "mnt"
    (mount / "3fs-virt").mkdir(parents=True)
    _warpload_write(mount / "m.safetensors")
    return mount


def _warpload_write(path):
    # 3 MiB in three tensors, written by the independent reference writer.
    import numpy as np
    rng = np.random.default_rng(5)
    ref.write(str(path), [(f"t{i}", "U8", [1024, 1024],
                           rng.integers(0, 255, size=1 << 20, dtype=np.uint8).tobytes())
                          for i in range(3)])


# A child's 3fs load of MOUNT into cuda:0 through a ring of at most 1 MiB.
_LOAD = """
import os, warpload
from warpload import _warpload
loader = _warpload._Loader(backend="3fs", device="cuda:0", use_config=False, staging_bytes=1 << 20)
loader.add(MOUNT)
loader.load()
"""


def _child(code, cuda, emulator, **extra):
    env = dict(os.environ, WARPLOAD_CUDA_LIB=cuda, WARPLOAD_HF3FS_LIB=emulator,
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **extra)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _iov_links(mount):
    folder = mount / "3fs-virt" / "iovs"
    return sorted(os.readlink(folder / n) for n in os.listdir(folder)) if folder.exists() else []


def test_nothing_pooled_without_device_loads():
    assert warpload.staging_pool_bytes() == 0
    assert warpload.release_staging_pools() == 0


def test_pool_is_held_then_released_explicitly(tmp_path):
    cuda, emulator = _doubles()
    mount = _mount(tmp_path)
    iovs = str(mount / "3fs-virt" / "iovs")
    child = _child(f"MOUNT = {str(mount)!r}" + _LOAD + textwrap.dedent(f"""
        held = warpload.staging_pool_bytes()
        links = len(os.listdir({iovs!r}))
        del loader
        print(held, links, warpload.release_staging_pools(), warpload.staging_pool_bytes(),
              len(os.listdir({iovs!r})))
    """), cuda, emulator)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    held, links, freed, after, links_after = map(int, out.split())
    assert 0 < held <= 1 << 20 and links > 0
    assert freed == held and after == 0 and links_after == 0


def test_keyboard_interrupt_mid_load_leaves_no_iov(tmp_path):
    cuda, emulator = _doubles()
    mount = _mount(tmp_path)
    # One I/O stalls for 2 s: Ctrl-C lands while the pool's iovs exist.
    child = _child(f"MOUNT = {str(mount)!r}" + _LOAD, cuda, emulator, WARPLOAD_EMU_DELAY_OFFSET="2000000", WARPLOAD_EMU_DELAY_MS="2000")
    seen = []
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.005)
        seen = _iov_links(mount)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert seen, "the load never made its iovs"
    assert child.returncode != 0 and "KeyboardInterrupt" in err, err
    assert _iov_links(mount) == []
    assert not any(os.path.exists(p) for p in seen), seen
