#!/usr/bin/env bash
# Installs every Debian package holdfast needs to build, test and benchmark.
# Idempotent and non-interactive: when every package is present it changes nothing
# and touches no network. Run as root (or with sudo) on Debian 12.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates ccache
  # erasure coding, transport, control plane, catalog, logging
  libisal-dev
  libucx-dev ucx-utils
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  # job secrets (SHA-256, HMAC, randomness): libcrypto
  libssl-dev
  librocksdb-dev
  libspdlog-dev libfmt-dev
  # configuration, command line, JSON output, systemd notify
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libsystemd-dev
  # systemd-analyze verify of the unit in the tests; systemd-sysusers/tmpfiles for install.sh
  systemd
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # Python binding and PyTorch
  pybind11-dev python3-dev python3-torch python3-numpy
  # network namespaces for the cluster test across namespaces (ip netns, veth, bridge)
  iproute2
  # the openssl CLI: throwaway CAs and certificates in the mutual-TLS tests and benchmark
  openssl
  # bench/run_all: plots; profiling (perf, callgrind, heaptrack) as in docs/benchmarks.md
  python3-matplotlib linux-perf valgrind heaptrack
  # libFuzzer targets (tests/fuzz/run.sh): clang, its sanitizer/fuzzer runtimes, symbolizer
  clang-14 libclang-rt-14-dev llvm-14
)

missing=()
for p in "${packages[@]}"; do
  # dpkg-query prints "install ok installed" only for a fully installed package.
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
