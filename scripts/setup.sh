#!/usr/bin/env bash
# Installs the Debian 12 packages the build and tests need. Idempotent: installs only what is
# missing, and does nothing (not even `apt-get update`) when everything is present.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config
  libabsl-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev python3-sentencepiece
  libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libcpp-httplib-dev libssl-dev openssl libboost-dev
  prometheus python3-grpcio python3-protobuf python3-yaml
  libxrt-dev uuid-dev
  clang libclang-rt-14-dev
)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
