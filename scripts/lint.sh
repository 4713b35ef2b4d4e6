#!/usr/bin/env bash
# Static checks on src/: clang-tidy (the curated .clang-tidy) and cppcheck, both driven by the
# compile commands of a configure-only build folder (nothing is compiled). Used by `make lint`.
#
#   scripts/lint.sh [BUILD_DIR] [JOBS]
#
# Exit status 1 when either tool reports anything.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build-lint}
jobs=${2:-$(nproc)}

# Files whose findings wait for their owners, each with what clang-tidy reports there; remove a
# file from the list once it is fixed. Empty now.
lint_exclude=()

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
  -DWARPLOAD_BUILD_TESTS=OFF -DWARPLOAD_BUILD_TOOLS=OFF -DWARPLOAD_BUILD_EXAMPLES=OFF \
  -DWARPLOAD_BUILD_BENCHMARKS=OFF -DWARPLOAD_BUILD_PYTHON=OFF >/dev/null

files=()
for file in $(git ls-files --cached --others --exclude-standard 'src/*.cpp' | sort); do
  skip=0
  for excluded in "${lint_exclude[@]}"; do
    [ "$file" = "$excluded" ] && skip=1
  done
  [ "$skip" -eq 0 ] && files+=("$PWD/$file")
done

status=0
echo "lint: clang-tidy-14 on ${#files[@]} files of src/ (${#lint_exclude[@]} excluded, see scripts/lint.sh)"
tidy_log="$build/clang-tidy.log"
run-clang-tidy-14 -p "$build" -j "$jobs" -quiet "${files[@]}" >"$tidy_log" 2>&1 || true
if grep -E "(warning|error): " "$tidy_log"; then
  echo "lint: clang-tidy reported the findings above (full log: $tidy_log)"
  status=1
fi

echo "lint: cppcheck on src/"
# The same files, through a compile database of their entries alone.
python3 - "$build/compile_commands.json" "$build/lint_commands.json" "${files[@]}" <<'PY'
import json, sys
source, target, files = sys.argv[1], sys.argv[2], set(sys.argv[3:])
entries = [e for e in json.load(open(source)) if e["file"] in files]
json.dump(entries, open(target, "w"))
PY
if ! cppcheck --project="$build/lint_commands.json" \
    --enable=warning,performance,portability --std=c++20 --inline-suppr \
    --suppress=missingIncludeSystem --error-exitcode=1 -q -j "$jobs"; then
  echo "lint: cppcheck reported the findings above"
  status=1
fi

[ "$status" -eq 0 ] && echo "lint: clean"
exit "$status"
