#!/usr/bin/env bash
# Installs the Debian 12 packages this project needs. Idempotent: installs only what is missing,
# and does nothing (not even `apt-get update`) when everything is present.
#   scripts/setup.sh           everything: build, tests, sanitizers, the image test's tools
#   scripts/setup.sh --build   only what building the binaries needs (the image's build stage)
set -euo pipefail

build=(
  cmake ninja-build g++ pkg-config
  libabsl-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libopenblas-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libcpp-httplib-dev libssl-dev libboost-dev
  libxrt-dev uuid-dev
)
tests=(
  libgtest-dev libgmock-dev libbenchmark-dev python3-sentencepiece
  prometheus python3-grpcio python3-protobuf python3-yaml
  clang libclang-rt-14-dev
  # scripts/image-test.sh: a Debian root filesystem from the apt mirror, and an OCI image built and
  # run from it without a Docker daemon.
  mmdebstrap buildah curl
  # the release build's compiler cache, which the image's build stage shares (scripts/test.sh)
  ccache
)

case "${1:-}" in
  --build) packages=("${build[@]}") ;;
  "") packages=("${build[@]}" "${tests[@]}") ;;
  *) echo "usage: $0 [--build]" >&2; exit 2 ;;
esac

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
