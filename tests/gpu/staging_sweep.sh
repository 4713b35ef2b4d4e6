#!/usr/bin/env bash
# The staged pipeline's shape against its throughput on a GPU machine: loads one checkpoint
# (page cache warm) to cuda:0 with slot size x reader threads x posix workers x ring budget,
# best of 2 each, and first measures the page cache's own rate into already-mapped memory
# (N threads pread()ing 64 MiB pieces into buffers touched beforehand), the ceiling of any
# pipeline that copies out of the page cache.
#
#   tests/gpu/staging_sweep.sh WARPLOAD_BINARY CHECKPOINT_DIR   (tests/gpu/run.sh calls it)
#
# Then tests/gpu/pinning_probe.py (page-locking costs, DMA straight from the page cache).
# WARPLOAD_GPU_PROBES=0 skips both probes (the page cache's rate and pinning_probe.py).
# Uses the developer overrides WARPLOAD_STAGING_SLOT_BYTES / WARPLOAD_STAGING_READERS
# (src/core/staged_pipeline.hpp). Prints one markdown table per part.
set -euo pipefail
BIN=$1
CKPT=$2
MIB=$((1 << 20))

PROBES=${WARPLOAD_GPU_PROBES:-1}  # 0: skip the page-cache and pinning probes
if [[ "$PROBES" == 1 ]]; then
echo "page cache -> mapped memory (pread, 64 MiB pieces; GB/s by threads)"
python3 - "$CKPT" <<'PY'
import glob, os, sys, threading, time
files = sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors")))
piece = 64 << 20
jobs = [(f, off, min(piece, os.path.getsize(f) - off))
        for f in files for off in range(0, os.path.getsize(f), piece)]
total = sum(j[2] for j in jobs)
print("| threads | GB/s |\n|---:|---:|")
for threads in (1, 2, 4, 8, 16):
    best = 0.0
    for _ in range(2):
        bufs = [bytearray(piece) for _ in range(threads)]  # touched: mapped before timing
        fds = {f: os.open(f, os.O_RDONLY) for f in files}
        cursor = iter(range(len(jobs)))
        lock = threading.Lock()
        def work(buf):
            view = memoryview(buf)
            while True:
                with lock:
                    i = next(cursor, None)
                if i is None:
                    return
                f, off, n = jobs[i]
                os.preadv(fds[f], [view[:n]], off)
        start = time.perf_counter()
        ts = [threading.Thread(target=work, args=(b,)) for b in bufs]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        best = max(best, total / (time.perf_counter() - start) / 1e9)
        for fd in fds.values():
            os.close(fd)
    print(f"| {threads} | {best:.2f} |")
PY
fi

run() {  # run BACKEND SLOT_MIB READERS THREADS STAGING_MIB (0 = default) -> best of 2
  local best=0 best_wall=0 out env=()
  [[ "$2" != 0 ]] && env+=(WARPLOAD_STAGING_SLOT_BYTES=$(($2 * MIB)))
  [[ "$3" != 0 ]] && env+=(WARPLOAD_STAGING_READERS="$3")
  local args=(--backend "$1")
  [[ "$4" != 0 ]] && args+=(--threads "$4")
  [[ "$5" != 0 ]] && args+=(--staging "$5MiB")
  for _ in 1 2; do
    out=$(env "${env[@]}" timeout 60 "$BIN" load "$CKPT" --device cuda:0 "${args[@]}" --json \
      2>/dev/null | python3 -c 'import json, sys; j = json.load(sys.stdin)
print(j["gbps"], j["bytes"] / j["wall_seconds"] / 1e9)' || echo "0 0")
    read -r g w <<<"$out"
    best=$(python3 -c "print(max($best, $g))")
    best_wall=$(python3 -c "print(max($best_wall, $w))")
  done
  printf '| %s | %s | %s | %s | %s | %.2f | %.2f |\n' "$1" "$2" "$3" "$4" "$5" "$best" "$best_wall"
}

echo
echo "staged pipeline (GB/s, best of 2; 0 = default; wall counts device allocation and setup)"
echo "| backend | slot MiB | readers | posix threads | ring MiB | GB/s | GB/s wall |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for cfg in "posix 0 0 0 0" "auto 0 0 0 0" "uring 0 0 0 0" "posix 64 2 16 256" \
  "posix 16 8 16 256" "posix 16 8 16 128" "posix 8 16 16 128" "posix 4 16 16 64" \
  "posix 4 8 16 64" "posix 2 16 16 32" "posix 2 32 32 64" "posix 1 16 16 16"; do
  # shellcheck disable=SC2086
  run $cfg
done

if [[ "$PROBES" == 1 ]]; then
  echo
  timeout 90 python3 "$(dirname "$0")/pinning_probe.py" "$CKPT" || echo "pinning probe failed"
fi
