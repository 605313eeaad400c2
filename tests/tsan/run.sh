#!/usr/bin/env bash
# ThreadSanitizer run of the daemon's concurrency tests (CI step 3 of
# tests/run.sh): the snapshot manager's event loop, verification worker pool,
# leases and sessions; the UCX transport's progress thread, in one process and
# across processes; the client's copy threads. Only these targets are built.
# Why the suites that go through gRPC are not here: tests/tsan/README.md.
#
#   tests/tsan/run.sh [BUILD_DIR] [extra cmake arguments...]
#
# System libraries (gRPC, UCX, RocksDB, protobuf) are not instrumented; what
# that means and every suppression are in tests/tsan/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-build-tsan}
shift || true

cmake -S . -B "$dir" -G Ninja -DHOLDFAST_WERROR=ON -DHOLDFAST_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1" "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" \
  -DHOLDFAST_PYTHON=OFF -DHOLDFAST_BUILD_BENCH=OFF "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)" --target \
  holdfast_smp_manager_test holdfast_smp_transport_test holdfast_client_copy_engine_test

# halt_on_error: the first report fails the test that caused it (a daemon
# exits 66, which its test sees as a crash).
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 suppressions=$PWD/tests/tsan/suppressions.txt"
# UCX's memory hooks (UCM patches mmap/munmap/brk to track registrations)
# fight TSan's own interceptors and crash the process; the transport registers
# no memory types that need them (tcp only), so they are off under TSan.
export UCX_MEM_EVENTS=no UCX_MEMTYPE_CACHE=n
ctest --test-dir "$dir" --output-on-failure -j"$(nproc)" \
  -R '^(smp\.(SnapshotManagerTest|Transport|PeerProcessTest)|client\.(CopyEngine|Threads/CopyEngine))'
