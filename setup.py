"""Builds warpload._warpload with the project's CMake (target warpload_python).

pip runs this through pyproject.toml. The CMake build goes to build-pip/ (never build/,
which `make build` owns); settings: WARPLOAD_PIP_BUILD_DIR, WARPLOAD_PIP_JOBS, CMAKE_ARGS.
"""

import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        build_dir = os.environ.get("WARPLOAD_PIP_BUILD_DIR", os.path.join(ROOT, "build-pip"))
        jobs = os.environ.get("WARPLOAD_PIP_JOBS", str(os.cpu_count() or 2))
        configure = [
            "cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
            f"-DWARPLOAD_PYTHON={sys.executable}", f"-DPython_EXECUTABLE={sys.executable}",
            "-DWARPLOAD_BUILD_TESTS=OFF", "-DWARPLOAD_BUILD_TOOLS=OFF",
            "-DWARPLOAD_BUILD_EXAMPLES=OFF", "-DWARPLOAD_BUILD_BENCHMARKS=OFF",
        ]
        if shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        configure += shlex.split(os.environ.get("CMAKE_ARGS", ""))
        subprocess.check_call(configure)
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "warpload_python",
                               "-j", jobs])
        built_dir = os.path.join(build_dir, "python", "warpload")
        modules = [f for f in os.listdir(built_dir) if f.startswith("_warpload.")]
        if len(modules) != 1:
            raise RuntimeError(f"expected one _warpload module in {built_dir}, found {modules}")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(built_dir, modules[0]), target)


os.makedirs(os.path.join(ROOT, "build-pip"), exist_ok=True)
setup(
    ext_modules=[CMakeExtension("warpload._warpload")],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": "build-pip/setuptools"}, "egg_info": {"egg_base": "build-pip"}},
)
