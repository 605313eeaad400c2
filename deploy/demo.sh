#!/usr/bin/env bash
# The main job: installs dependencies, builds holdfast in Release, and runs the
# demo. Today the demo is the erasure-coding core on one machine (encode a k+m
# group, lose m nodes, rebuild them, verify, print throughput); extra arguments
# go to it, e.g. `deploy/demo.sh -k 8 -m 2 --node-mib 256`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DHOLDFAST_BUILD_TESTS=OFF -DHOLDFAST_BUILD_BENCH=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target holdfast_ec_demo
exec build-release/ec/holdfast_ec_demo "$@"
