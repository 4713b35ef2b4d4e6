"""The package itself: stubs, import cost, GIL release."""

import os
import subprocess
import sys
import threading
import time

import numpy as np

import st_reference as ref
import warpload

PACKAGE = os.path.dirname(warpload.__file__)


def test_typed_stubs_are_shipped():
    for name in ("__init__.pyi", os.path.join("fastsafetensors", "__init__.pyi"), "py.typed"):
        assert os.path.exists(os.path.join(PACKAGE, name)), name
    stub = open(os.path.join(PACKAGE, "__init__.pyi")).read()
    for public in warpload.__all__:
        assert public in stub, public


def test_import_is_fast_and_does_not_import_torch():
    code = ("import sys, time; t = time.perf_counter(); import warpload; "
            "print(time.perf_counter() - t, 'torch' in sys.modules, 'numpy' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    best = min(float(subprocess.check_output([sys.executable, "-c", code], env=env,
                                             text=True).split()[0]) for _ in range(3))
    out = subprocess.check_output([sys.executable, "-c", code], env=env, text=True).split()
    assert out[1:] == ["False", "False"]
    assert best < 0.150, f"import warpload took {best * 1000:.0f} ms"


def test_gil_is_released_during_io(tmp_path):
    path = str(tmp_path / "g.safetensors")
    ref.write_sparse(path, [(f"t{i}", "F32", [16 << 20]) for i in range(4)])  # 256 MiB
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        start = time.monotonic()
        warpload.load_file(path, framework="numpy", backend="posix", threads=1, block_size=4096)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        spinner.join()
    during = [t for t in ticks if start <= t <= start + elapsed]
    # a thread holding the GIL for the whole load would leave the spinner ~no ticks
    assert len(during) > elapsed / 0.001 * 0.3, (len(during), elapsed)
    assert np.dtype("float32")  # numpy imported by the load, not by warpload itself
