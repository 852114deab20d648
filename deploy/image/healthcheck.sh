#!/bin/sh
# The image's HEALTHCHECK, for whichever program the container runs (PID 1, or ACCLLM_HEALTH set
# to daemon or gateway): the daemon's gRPC health (SERVING once the model is loaded, until it
# drains) or the gateway's /health (200 while an upstream daemon is serving). The port is
# ACCLLM_HEALTH_PORT, else the program's default.
program=${ACCLLM_HEALTH:-$(cat /proc/1/comm 2>/dev/null)}
case "$program" in
  gateway|accllm-gateway)
    exec curl -fsS -o /dev/null --max-time 4 "http://127.0.0.1:${ACCLLM_HEALTH_PORT:-8000}/health" ;;
  *)
    exec accllm client --health --health-timeout 4 --server "127.0.0.1:${ACCLLM_HEALTH_PORT:-50051}" ;;
esac
