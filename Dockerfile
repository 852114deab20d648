# AccLLM Serve: built on Debian 12, run on Debian 12 slim with only the runtime libraries.
#
#   docker build -t accllm-serve .
#   docker run -p 50051:50051 -p 9090:9090 -v /path/to/models:/models:ro accllm-serve \
#       --model /models/stories260K.bin --devices cpu
#
# On a node with U280 cards the Xilinx device plugin hands the pod its cards (deploy/k8s); the
# image brings XRT's user-space library, the host brings the xocl driver and the card's shell.
FROM debian:12 AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN scripts/setup.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DACCLLM_BUILD_TESTS=OFF -DWITH_FPGA=ON \
 && cmake --build build --target accllm accllm-server accllm-xclbin \
 && strip build/server/accllm-server build/tools/accllm/accllm build/fpga/accllm-xclbin

FROM debian:12-slim
# Exactly the shared libraries the binaries link (tests/python/deploy_test.py holds this list
# against ldd), and curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libspdlog1.10 libcpp-httplib0.11 libssl3 libxrt1 libopenblas0-pthread \
      curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home accllm
COPY --from=build /src/build/server/accllm-server /src/build/tools/accllm/accllm /src/build/fpga/accllm-xclbin /usr/local/bin/
COPY deploy/k8s/server.toml /etc/accllm/server.toml
USER accllm
EXPOSE 50051 9090
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
ENTRYPOINT ["accllm-server"]
CMD ["--config", "/etc/accllm/server.toml"]
