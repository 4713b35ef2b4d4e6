#!/usr/bin/env bash
# Runs each libFuzzer target of a WARPLOAD_FUZZ build for SECONDS and prints, per target, the
# executions run and the crashes found. Used by `make fuzz` and `make test-fuzz`.
#
#   scripts/run-fuzz.sh BUILD_DIR SECONDS
#
# Corpora grow in BUILD_DIR/fuzz-corpus/<target> (kept between runs); seeds are regenerated
# into BUILD_DIR/fuzz-seeds from SafetensorsWriter and crafted files (tests/fuzz/seed_corpus.cpp).
# A crashing input is saved as BUILD_DIR/fuzz-crashes/<target>-crash-<sha1>; the log of each
# run is BUILD_DIR/fuzz-logs/<target>.log. Exit status 1 when any target crashed.
set -euo pipefail

build=${1:?usage: run-fuzz.sh BUILD_DIR SECONDS}
seconds=${2:?usage: run-fuzz.sh BUILD_DIR SECONDS}
here=$(cd "$(dirname "$0")/.." && pwd)
targets=(header_fuzzer load_fuzzer)

"$build/tests/fuzz/warpload_fuzz_seeds" "$build/fuzz-seeds"
mkdir -p "$build/fuzz-crashes" "$build/fuzz-logs"

status=0
summary=()
for target in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$target"
  log="$build/fuzz-logs/$target.log"
  mkdir -p "$corpus"
  echo "fuzz: $target for ${seconds}s"
  # -timeout: one input taking 10 s is a hang. -rss_limit_mb: a memory bomb is a crash.
  # Leaks are detected (ASan's LeakSanitizer) at the end of every input that allocated.
  rc=0
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$build/tests/fuzz/$target" "$corpus" "$build/fuzz-seeds" \
    -dict="$here/tests/fuzz/safetensors.dict" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-crashes/$target-" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  crashes=0
  if [ "$rc" -ne 0 ]; then
    crashes=1  # libFuzzer stops at the first crash
    status=1
    echo "fuzz: $target FAILED (exit $rc); last lines of $log:"
    tail -40 "$log"
  fi
  summary+=("$(printf '%-14s %12s executions in %ss, %d crashes' "$target" "${execs:-?}" \
    "$seconds" "$crashes")")
done

echo "fuzz summary ($(date -u +%Y-%m-%dT%H:%M:%SZ)):"
printf '  %s\n' "${summary[@]}"
exit "$status"
