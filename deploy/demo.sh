#!/usr/bin/env bash
# The main job: installs dependencies, builds holdfast in Release, and runs the demo
# (deploy/demo.py): a local 3-node 2+1 cluster, a 2-rank PyTorch job snapshotting every step,
# node n1 lost with its RAM, `holdfast recover` rebuilding it, the job resuming, and a final
# line comparing the resumed run with an uninterrupted one, bit for bit. It cleans up after
# itself. Extra arguments go to demo.py (e.g. `deploy/demo.sh --steps 100 --lose-at 40`).
#
# The erasure-coding core alone (no daemons): build-release/ec/holdfast_ec_demo -k 4 -m 2.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DHOLDFAST_BUILD_TESTS=OFF -DHOLDFAST_BUILD_BENCH=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target holdfastd holdfast holdfast_python \
  holdfast_python_sources holdfast_ec_demo
exec /usr/bin/python3 deploy/demo.py --build build-release "$@"
