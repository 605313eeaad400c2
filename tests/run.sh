#!/usr/bin/env bash
# The test suite, from a fresh machine: installs dependencies, builds with
# warnings as errors, runs every ctest suite; then builds again with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs the suites again.
# HOLDFAST_SKIP_SANITIZE=1 skips the second build (a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
jobs=$(nproc)

run_suite() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DHOLDFAST_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  ctest --test-dir "$dir" --output-on-failure -j"$jobs"
}

echo "== tests: RelWithDebInfo, -Werror"
run_suite build
if [[ "${HOLDFAST_SKIP_SANITIZE:-0}" != 1 ]]; then
  echo "== tests: AddressSanitizer + UndefinedBehaviorSanitizer"
  # Without the Python package: its extension would need the ASan runtime
  # preloaded into /usr/bin/python3. The Python suites run in the first build.
  run_suite build-asan -DHOLDFAST_SANITIZE=ON -DHOLDFAST_BUILD_BENCH=OFF -DHOLDFAST_PYTHON=OFF
fi
