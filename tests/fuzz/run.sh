#!/bin/bash
# Builds and runs the libFuzzer targets of tests/fuzz (docs/reliability-fuzz.md).
#
#   tests/fuzz/run.sh            CI mode: each target for HOLDFAST_FUZZ_TIME seconds (20)
#   HOLDFAST_FUZZ_RUNS=10000000 tests/fuzz/run.sh
#                                long mode: each target until that many executions (and
#                                at most HOLDFAST_FUZZ_TIME seconds if that is set too)
#   tests/fuzz/run.sh --seeds    regenerates tests/fuzz/corpus/ (make_corpus, make_python_corpus.py)
#   tests/fuzz/run.sh TARGET...  only these targets (names without _fuzz, e.g. config cluster)
#   HOLDFAST_FUZZ_BUILD_ONLY=1   build, run nothing
#
# Targets run HOLDFAST_FUZZ_JOBS (2) at a time, under nice, each from a COPY of its
# checked-in seed corpus (new inputs go to the copy, under build-fuzz/fuzz-out/). Any crash,
# leak, timeout, out-of-memory or sanitizer report fails the run; the reproducer is kept in
# build-fuzz/fuzz-out/<target>/ and its log printed. Prints per target: executions, exec/s,
# coverage (edges, features), corpus size, wall time.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${HOLDFAST_FUZZ_BUILD:-$root/build-fuzz}
corpus=$root/tests/fuzz/corpus
out=$build/fuzz-out
jobs=${HOLDFAST_FUZZ_JOBS:-2}
seconds=${HOLDFAST_FUZZ_TIME:-20}
runs=${HOLDFAST_FUZZ_RUNS:-}
all_targets=(catalog_record peer_request config cluster python_state)

seeds=0
targets=()
for arg in "$@"; do
  case $arg in
    --seeds) seeds=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) targets+=("$arg") ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

start=$(date +%s)
cmake_args=(-G Ninja -DHOLDFAST_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
            "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1")
if command -v ccache >/dev/null; then
  cmake_args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
CC=clang-14 CXX=clang++-14 nice -n 5 cmake -S "$root" -B "$build" "${cmake_args[@]}" >/dev/null
nice -n 5 cmake --build "$build" -j "$jobs" --target holdfast_fuzz make_corpus >/dev/null
echo "build: $(( $(date +%s) - start )) s"
# tests/run.sh builds ahead, in the background of the sanitizer suites.
if [ "${HOLDFAST_FUZZ_BUILD_ONLY:-0}" = 1 ]; then exit 0; fi

if [ $seeds = 1 ]; then
  # regress-* inputs (of fixed findings) are kept; the generated seeds are rewritten.
  for t in "${all_targets[@]}"; do
    [ -d "$corpus/$t" ] && find "$corpus/$t" -type f ! -name 'regress-*' -delete
  done
  ASAN_OPTIONS=detect_leaks=0 "$build/tests/fuzz/make_corpus" "$root" "$corpus"
  /usr/bin/python3 "$root/tests/fuzz/make_python_corpus.py" "$corpus" >/dev/null
  find "$corpus" -type f | sort | xargs ls -l | awk '{print $5, $9}'
  exit 0
fi

export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer-14 || true)}
# -fno-sanitize-recover makes UBSan fatal; print_stacktrace for the report.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# Runs one target; writes its log to $out/<target>.log and a summary line to .summary.
run_target() {
  local t=$1 bin=$build/tests/fuzz/${1}_fuzz dir=$out/$1
  rm -rf "$dir"
  mkdir -p "$dir/corpus"
  cp -r "$corpus/$t/." "$dir/corpus/"
  local limit=(-max_total_time="$seconds")
  if [ -n "$runs" ]; then
    limit=(-runs="$runs")
    # A time cap too, when one is given explicitly: whichever comes first.
    [ -n "${HOLDFAST_FUZZ_TIME:-}" ] && limit+=(-max_total_time="$seconds")
  fi
  local asan=${ASAN_OPTIONS:-}
  local extra=()
  if [ "$t" = python_state ]; then
    # CPython keeps its interned objects and torch its globals for the process lifetime; a
    # skeleton claiming a huge object gets NULL from malloc (MemoryError), as without ASan.
    asan=detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=2048${asan:+:$asan}
    extra=(-malloc_limit_mb=4096)
  fi
  local t0 rc=0
  t0=$(date +%s.%N)
  # -purge_allocator_interval=-1: libFuzzer's once-a-second purge of ASan's free memory madvises
  # it away; on these VMs that madvise's TLB shootdowns and the page faults after it took a third
  # of the cluster target's samples (perf: smp_call_function_many_cond under
  # __sanitizer_purge_allocator), and its rate fell to 190 exec/s per worker against 1,000-1,700
  # without the purge on the same corpus. -rss_limit_mb still bounds the process.
  ASAN_OPTIONS=$asan nice -n 5 "$bin" "${limit[@]}" -timeout=25 -rss_limit_mb=2560 \
      -purge_allocator_interval=-1 -print_final_stats=1 "${extra[@]}" -artifact_prefix="$dir/" \
      "$dir/corpus" >"$out/$t.log" 2>&1 || rc=$?
  local t1 secs
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  local execs cov ft corp rate
  execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$out/$t.log")
  rate=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$out/$t.log")
  # The last status line: "#N ... cov: C ft: F corp: K/S ..."
  cov=$(grep -Eo 'cov: [0-9]+' "$out/$t.log" | tail -1 | awk '{print $2}')
  ft=$(grep -Eo 'ft: [0-9]+' "$out/$t.log" | tail -1 | awk '{print $2}')
  corp=$(grep -Eo 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$out/$t.log" | tail -1 | awk '{print $2}')
  local crashes
  # slow-unit-* files (an input over 10 s) are kept but are not failures: on a loaded
  # machine they measure the machine; -timeout=25 is the limit.
  crashes=$(find "$dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
      -o -name 'oom-*' \) | wc -l)
  local verdict=ok
  if [ "$rc" != 0 ] || [ "$crashes" != 0 ] || grep -q 'ERROR: \(AddressSanitizer\|LeakSanitizer\|libFuzzer\)\|runtime error:' "$out/$t.log"; then
    verdict=FAILED
  fi
  printf '%-15s %-6s execs %-10s exec/s %-7s cov %-6s ft %-7s corpus %-12s time %ss\n' \
      "$t" "$verdict" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$secs" \
      >"$out/$t.summary"
  [ $verdict = ok ]
}

mkdir -p "$out"
failed=()
pids=()
names=()
wait_one() {
  local i=0
  if ! wait "${pids[0]}"; then failed+=("${names[0]}"); fi
  pids=("${pids[@]:1}")
  names=("${names[@]:1}")
}
for t in "${targets[@]}"; do
  while [ ${#pids[@]} -ge "$jobs" ]; do wait_one; done
  run_target "$t" &
  pids+=($!)
  names+=("$t")
done
while [ ${#pids[@]} -gt 0 ]; do wait_one; done

for t in "${targets[@]}"; do cat "$out/$t.summary"; done
echo "total: $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -gt 0 ]; then
  for t in "${failed[@]}"; do
    echo "=== $t failed: $out/$t.log (reproducers in $out/$t/)"
    grep -A40 -m1 'ERROR\|runtime error\|==.*==\|python_state_fuzz:' "$out/$t.log" | head -25 || tail -40 "$out/$t.log"
  done
  exit 1
fi
