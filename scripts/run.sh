#!/usr/bin/env bash
# The main job: install dependencies, build, start accllm-server on the default model
# (../shared/models/stories260K.bin, or $ACCLLM_MODEL) and accllm-gateway in front of it, stream
# a story from the daemon with the demo client and one through the gateway's OpenAI API with curl.
# Extra arguments go to `accllm client` (e.g. -p "Lily and Ben" -n 100).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -- accllm accllm-server accllm-gateway

model=${ACCLLM_MODEL:-../shared/models/stories260K.bin}
server_log=$(mktemp)
gateway_log=$(mktemp)
pids=()
trap 'for p in "${pids[@]}"; do kill -TERM $p 2>/dev/null || true; done; wait 2>/dev/null || true; rm -f "$server_log" "$gateway_log"' EXIT

# Waits for `pattern` in `log` (written by process `pid`) and prints its first group.
wait_for() {
  local log=$1 pid=$2 pattern=$3 what=$4 value
  for _ in $(seq 300); do
    value=$(sed -n "s/$pattern/\1/p" "$log" | head -1)
    if [ -n "$value" ]; then echo "$value"; return; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$log" >&2; break; fi
    sleep 0.1
  done
  echo "run.sh: $what did not start" >&2
  cat "$log" >&2
  exit 1
}

build/server/accllm-server -m "$model" --window 256 --listen 127.0.0.1:0 2>"$server_log" &
pids+=($!)
port=$(wait_for "$server_log" "${pids[0]}" '.* on port \([0-9]*\)$' accllm-server)
echo "run.sh: accllm-server on 127.0.0.1:$port ($model)" >&2
build/gateway/accllm-gateway --upstream "127.0.0.1:$port" --listen 127.0.0.1:0 2>"$gateway_log" &
pids+=($!)
gateway=$(wait_for "$gateway_log" "${pids[1]}" '.*listening on port \([0-9]*\)$' accllm-gateway)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$gateway/health" >/dev/null && break
  sleep 0.1
done
echo "run.sh: accllm-gateway (OpenAI API) on http://127.0.0.1:$gateway/v1" >&2

if [ $# -eq 0 ]; then
  set -- -p "Once upon a time" -n 256 --temperature 0.8 --top-p 0.9
fi
build/tools/accllm/accllm client --server "127.0.0.1:$port" "$@"

model_name=$(curl -s "http://127.0.0.1:$gateway/v1/models" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
request='{"model":"'"$model_name"'","messages":[{"role":"user","content":"Lily and Ben"}],"max_tokens":60,"stream":true}'
echo >&2
echo "run.sh: through the gateway:" >&2
echo "  curl -N http://127.0.0.1:$gateway/v1/chat/completions -H 'Content-Type: application/json' -d '$request'" >&2
curl -sN "http://127.0.0.1:$gateway/v1/chat/completions" -H 'Content-Type: application/json' -d "$request"
