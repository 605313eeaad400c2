#!/usr/bin/env bash
# The test suite, from a fresh machine: installs dependencies, then
#   1. builds with warnings as errors (-O2) and runs the system suites: load
#      alone, then Python and PyTorch, deploy and the chaos suite in the
#      background while step 2 compiles;
#   2. builds with AddressSanitizer + UndefinedBehaviorSanitizer and runs every
#      GoogleTest suite (unit, integration, fault injection) and deploy;
#   3. builds the daemon's concurrency tests with ThreadSanitizer and runs them;
#   4. builds the libFuzzer targets (clang) and runs each briefly on its corpus.
# Each suite runs once, where it finds the most: the GoogleTest suites under the
# sanitizers, the Python ones where the extension loads without a preloaded
# ASan runtime. HOLDFAST_SKIP_SANITIZE=1 builds step 1 with the GoogleTest
# suites included and runs everything unsanitized (a quick local run).
#
# Build flags: line tables only (-g1) — enough for every backtrace and
# sanitizer report, and half the compile time of full debug info on the
# 2-core CI machine; the sanitizer builds use -O1 with assertions on.
# ccache is used when present (deploy/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
jobs=$(nproc)
launcher=()
if command -v ccache >/dev/null 2>&1; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi

configure_and_build() {
  local dir=$1 flags=$2
  shift 2
  cmake -S . -B "$dir" -G Ninja -DHOLDFAST_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_C_FLAGS_RELWITHDEBINFO=$flags" "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$flags" \
    "${launcher[@]}" "$@" >/dev/null
}

phase() { echo "== tests: $1 ($(date -u +%T))"; }

if [[ "${HOLDFAST_SKIP_SANITIZE:-0}" == 1 ]]; then
  phase "RelWithDebInfo, -Werror, every suite"
  configure_and_build build "-O2 -g1 -DNDEBUG" -DHOLDFAST_UNIT_SUITES=ON
  cmake --build build -j"$jobs"
  ctest --test-dir build --output-on-failure -j"$jobs"
  exit 0
fi

phase "RelWithDebInfo, -Werror: load"
configure_and_build build "-O2 -g1 -DNDEBUG" -DHOLDFAST_UNIT_SUITES=OFF
cmake --build build -j"$jobs"
# The load suite measures latency and growth: it runs alone.
ctest --test-dir build --output-on-failure -L load

# The Python, deploy and chaos suites spend most of their time waiting (for
# daemons, trainers, faults to play out: paused daemons, cut links,
# restarts), so they run one after the other while the sanitizer build
# compiles, and are waited for before the sanitizer suites start.
phase "Python, deploy, then the chaos suite (in the background, during the sanitizer build)"
(
  rc=0
  ctest --test-dir build --output-on-failure -LE 'chaos|load' >build/system-ctest.log 2>&1 || rc=1
  ctest --test-dir build --output-on-failure -L chaos >build/chaos-ctest.log 2>&1 || rc=$((rc | 2))
  exit "$rc"
) &
chaos_pid=$!

phase "AddressSanitizer + UndefinedBehaviorSanitizer"
# Without the Python package: its extension would need the ASan runtime
# preloaded into /usr/bin/python3. The Python suites run in the first build.
configure_and_build build-asan "-O1 -g1" -DHOLDFAST_SANITIZE=ON -DHOLDFAST_BUILD_BENCH=OFF \
  -DHOLDFAST_PYTHON=OFF
cmake --build build-asan -j"$jobs"
chaos_rc=0
wait "$chaos_pid" || chaos_rc=$?
phase "Python, deploy and chaos suites finished"
cat build/system-ctest.log build/chaos-ctest.log
/usr/bin/python3 - build/tests/chaos/chaos-summary.json <<'PY' || true
import json, sys
d = json.load(open(sys.argv[1]))
print("chaos summary:", {k: v for k, v in d.items() if not isinstance(v, (list, dict))},
      "faults:", d.get("faults"))
PY
if ((chaos_rc != 0)); then
  exit "$chaos_rc"
fi
# The fuzz targets' clang build (nice'd) fills the cores the sanitizer suites
# leave idle while they wait on daemons.
fuzz_build_pid=
if [[ -x tests/fuzz/run.sh ]]; then
  HOLDFAST_FUZZ_BUILD_ONLY=1 tests/fuzz/run.sh >build/fuzz-build.log 2>&1 &
  fuzz_build_pid=$!
fi
ctest --test-dir build-asan --output-on-failure -j"$jobs" -LE 'chaos|load'
if [[ -n "$fuzz_build_pid" ]] && ! wait "$fuzz_build_pid"; then
  cat build/fuzz-build.log
  exit 1
fi

phase "ThreadSanitizer: the daemon's concurrency tests"
bash tests/tsan/run.sh build-tsan "${launcher[@]}"

phase "libFuzzer targets, short runs"
if [[ -x tests/fuzz/run.sh ]]; then
  HOLDFAST_FUZZ_TIME=${HOLDFAST_FUZZ_TIME:-10} tests/fuzz/run.sh
fi
phase "done"
