#!/usr/bin/env bash
# Installs everything fleetwes needs to build, test and run on Debian 12, from Debian's packages.
# (prometheus: its promtool lints the /metrics expositions in the tests; libgrpc-dev, libc-ares-dev,
# libre2-dev and the other -dev packages provide the static archives fleetwes-agent is linked from;
# libboost-dev its header-only HTTP, Boost.Beast; cpp-httplib serves the aggregator and the tests.)
# Idempotent and non-interactive: packages already present are left alone.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates curl
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libgrpc-dev libc-ares-dev libre2-dev
  libabsl-dev libpq-dev libpqxx-dev libyaml-cpp-dev libspdlog-dev libfmt-dev
  prometheus-cpp-dev libcpp-httplib-dev nlohmann-json3-dev libssl-dev zlib1g-dev
  libboost-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  postgresql-15 postgresql-client-15
  clang libclang-rt-14-dev clang-format
  procps iproute2
  prometheus
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
