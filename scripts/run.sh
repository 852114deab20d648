#!/usr/bin/env bash
# The main job: install dependencies, build, and generate a story from the default model
# (../shared/models/stories260K.bin, or $ACCLLM_MODEL). Extra arguments go to `accllm generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -- accllm
if [ $# -eq 0 ]; then
  set -- -p "Once upon a time" -n 256 --temperature 0.8 --top-p 0.9
fi
exec build/tools/accllm/accllm generate "$@"
