#!/usr/bin/env bash
# Builds what tests/gpu/run.sh runs and packs it into one folder that can travel to a GPU
# machine which lacks our build dependencies (simdjson, liburing, fmt, xxhash, GoogleTest):
#
#   scripts/gpu-prebuilt.sh [DIR] [PYTHON]     # DIR: .gpu-prebuilt (ignored by git)
#   ...then, on the GPU machine:  WARPLOAD_GPU_PREBUILT=DIR tests/gpu/run.sh
#
# DIR holds warpload, tests/{gpu_pipeline_test,gds_test,distributed_test}, lib/ (the shared
# libraries of those dependencies) and, when PYTHON (an interpreter with development headers,
# of the GPU machine's Python version, default: pyenv's 3.12 if present) is usable,
# python/warpload built for it. Build folder: $WARPLOAD_GPU_PREBUILT_BUILD or build-gpu-prebuilt.
set -euo pipefail

DIR=${1:-.gpu-prebuilt}
PYTHON=${2:-}
if [[ -z "$PYTHON" ]]; then
  for candidate in "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    [[ -x "$candidate" ]] && PYTHON=$candidate
  done
fi
BUILD=${WARPLOAD_GPU_PREBUILT_BUILD:-build-gpu-prebuilt}
args=(-DCMAKE_BUILD_TYPE=Release -DWARPLOAD_BUILD_EXAMPLES=OFF -DWARPLOAD_BUILD_BENCHMARKS=OFF)
[[ -n "$PYTHON" ]] && args+=(-DWARPLOAD_PYTHON="$PYTHON")
cmake -S . -B "$BUILD" -G Ninja "${args[@]}" >/dev/null
targets=(gpu_pipeline_test gds_test distributed_test warpload_cli hf3fs_api_shared)
ninja -C "$BUILD" -t targets all | grep -q '^warpload_python:' && targets+=(warpload_python)
ninja -C "$BUILD" "${targets[@]}"

rm -rf "$DIR"
mkdir -p "$DIR/tests" "$DIR/lib"
cp "$BUILD/warpload" "$DIR/"
cp "$BUILD"/tests/{gpu_pipeline_test,gds_test,distributed_test} "$DIR/tests/"
# The USRBIO emulator: run.sh loads 3fs into the device through it.
mkdir -p "$DIR/usrbio-emu"
cp "$BUILD/usrbio-emu/libhf3fs_api_shared.so" "$DIR/usrbio-emu/"
# The build dependencies' shared libraries (not glibc, libstdc++ or the loader).
ldd "$BUILD/warpload" "$BUILD"/tests/*_test |
  awk '/=> \// {print $3}' | sort -u |
  grep -E 'lib(fmt|simdjson|uring|xxhash|gtest|gmock)' | while read -r lib; do
    cp -L "$lib" "$DIR/lib/"
  done
if [[ -d "$BUILD/python/warpload" ]]; then
  mkdir -p "$DIR/python"
  cp -rL "$BUILD/python/warpload" "$DIR/python/"
  find "$DIR/python" -name __pycache__ -prune -exec rm -rf {} +
fi
du -sh "$DIR"
