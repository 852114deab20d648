#!/usr/bin/env bash
# Configures and builds one build tree: scripts/build.sh DIR [cmake args...] [-- TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1
shift
cmake_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do cmake_args+=("$1"); shift; done
[ $# -gt 0 ] && shift
targets=()
for t in "$@"; do targets+=(--target "$t"); done
generator=()
if command -v ninja >/dev/null && [ ! -f "$dir/CMakeCache.txt" ]; then generator=(-G Ninja); fi
cmake -S . -B "$dir" "${generator[@]}" "${cmake_args[@]}" >/dev/null
cmake --build "$dir" --parallel "$(nproc)" "${targets[@]}"
