#!/usr/bin/python3
"""Runs fastsafetensors' and safetensors' own test suites against warpload's drop-ins.

    scripts/upstream-suites/run.py --fastsafetensors ~/src/fastsafetensors \\
                                   --safetensors ~/src/safetensors [--build build]

Each path is a local checkout of the public repository (nothing is downloaded). Every test
file runs in its own pytest process with warpload_upstream_shim.py loaded, which aliases
the package names to warpload's and gives the suites a writer for their fixtures; 3FS tests
use the USRBIO emulator of the build (<build>/usrbio-emu). Prints passed/failed/skipped per
file and the failing tests; exits 0 (the expected failures are listed in docs/python.md).
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from typing import List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run_file(test_file: str, cwd: str, env: dict) -> Tuple[int, int, int, List[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.xml")
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-p", "warpload_upstream_shim", f"--junitxml={report}", test_file],
                       cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=900, check=False)
        if not os.path.exists(report):
            return 0, 1, 0, ["(pytest did not run)"]
        passed = failed = skipped = 0
        failures = []
        for case in ET.parse(report).getroot().iter("testcase"):
            name = case.get("name", "?")
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                failures.append(name)
            elif case.find("skipped") is not None:
                skipped += 1
            else:
                passed += 1
        return passed, failed, skipped, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fastsafetensors", help="fastsafetensors checkout")
    parser.add_argument("--safetensors", help="safetensors checkout")
    parser.add_argument("--build", default=os.path.join(ROOT, "build"),
                        help="warpload build directory (default: build)")
    parser.add_argument("-v", "--verbose", action="store_true", help="name failing tests")
    args = parser.parse_args()
    build = os.path.abspath(args.build)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE, os.path.join(build, "python")])
    env["TEST_FASTSAFETENSORS_FRAMEWORK"] = "pytorch"
    env["XDG_CONFIG_HOME"] = os.path.join(build, "no-config")  # no developer settings
    env["WARPLOAD_CONFIG"] = ""
    emulator = os.path.join(build, "usrbio-emu", "libhf3fs_api_shared.so")
    if os.path.exists(emulator):
        env["WARPLOAD_HF3FS_LIB"] = emulator

    suites = []
    if args.fastsafetensors:
        repo = os.path.abspath(args.fastsafetensors)
        unit = os.path.join(repo, "tests", "unit")
        # The 3FS tests name the fixtures' directories as mount points: make them fake mounts
        # of the emulator (a directory holding 3fs-virt/).
        for folder in (os.path.join(repo, "examples"),
                       os.path.join(repo, ".testdata", "generated")):
            os.makedirs(os.path.join(folder, "3fs-virt"), exist_ok=True)
        # test_parallel_threefs.py looks for examples/ under tests/ (three dirname()s from
        # tests/unit/threefs): point it at the repository's, or its tests skip.
        if not os.path.exists(os.path.join(repo, "tests", "examples")):
            os.symlink(os.path.join(repo, "examples"), os.path.join(repo, "tests", "examples"))
        files = sorted(glob.glob(os.path.join(unit, "test_*.py")) +
                       glob.glob(os.path.join(unit, "threefs", "test_*.py")))
        suites.append(("fastsafetensors", unit, files))
    if args.safetensors:
        tests = os.path.join(os.path.abspath(args.safetensors), "bindings", "python")
        files = sorted(glob.glob(os.path.join(tests, "tests", "test_*.py")))
        suites.append(("safetensors", tests, files))
    if not suites:
        parser.error("give --fastsafetensors and/or --safetensors")

    total = [0, 0, 0]
    for suite, cwd, files in suites:
        print(f"== {suite}")
        for path in files:
            passed, failed, skipped, failures = run_file(path, cwd, env)
            total = [total[0] + passed, total[1] + failed, total[2] + skipped]
            name = os.path.relpath(path, cwd)
            print(f"{name:48} passed {passed:3}  failed {failed:3}  skipped {skipped:3}")
            if args.verbose:
                for failure in failures:
                    print(f"    FAILED {failure}")
    print(f"total: passed {total[0]}, failed {total[1]}, skipped {total[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
