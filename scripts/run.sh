#!/usr/bin/env bash
# The main job: install dependencies, build, start accllm-server on the default model
# (../shared/models/stories260K.bin, or $ACCLLM_MODEL) and stream a story from it with the demo
# client. Extra arguments go to `accllm client` (e.g. -p "Lily and Ben" -n 100).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -- accllm accllm-server

model=${ACCLLM_MODEL:-../shared/models/stories260K.bin}
log=$(mktemp)
build/server/accllm-server -m "$model" --window 256 --listen 127.0.0.1:0 2>"$log" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  port=$(sed -n 's/.* on port \([0-9]*\)$/\1/p' "$log")
  [ -n "$port" ] && break
  if ! kill -0 $server 2>/dev/null; then cat "$log" >&2; exit 1; fi
  sleep 0.1
done
[ -n "${port:-}" ] || { echo "run.sh: the server did not start" >&2; cat "$log" >&2; exit 1; }
echo "run.sh: accllm-server on 127.0.0.1:$port ($model)" >&2
if [ $# -eq 0 ]; then
  set -- -p "Once upon a time" -n 256 --temperature 0.8 --top-p 0.9
fi
build/tools/accllm/accllm client --server "127.0.0.1:$port" "$@"
