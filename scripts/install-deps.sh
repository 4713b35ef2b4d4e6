#!/usr/bin/env bash
# Installs the Debian packages warpload needs to build and test, skipping those present.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libsimdjson-dev liburing-dev libcli11-dev libfmt-dev libxxhash-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev clang-tidy-14 cppcheck
  pybind11-dev python3-dev python3-pytest python3-numpy python3-torch python3-tqdm
  python3-setuptools python3-wheel python3-pip
  libcurl4-openssl-dev
  # object storage tests and benchmarks (tests/object_store): web server, TLS, S3 client
  nginx-light openssl curl python3-boto3
)
# s3rver runs on Node.js; a Node from elsewhere (e.g. NodeSource, which bundles npm) will do.
if ! command -v node >/dev/null 2>&1; then packages+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then packages+=(npm); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# s3rver, pinned by tests/object_store/package-lock.json, into tests/object_store/node_modules.
store="$(dirname "$0")/../tests/object_store"
if [ ! -f "$store/node_modules/s3rver/package.json" ]; then
  echo "install-deps: npm ci in tests/object_store (s3rver)"
  (cd "$store" && npm ci --no-audit --no-fund --loglevel=error)
fi
