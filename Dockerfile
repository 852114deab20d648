# syntax=docker/dockerfile:1
# AccLLM Serve: the daemon (accllm-server), the OpenAI-compatible gateway (accllm-gateway) and the
# CLI (accllm), built on Debian 12 and run on Debian 12 slim as a non-root user.
#
#   docker build -t accllm-serve .
#   docker run -p 50051:50051 -p 9090:9090 -v /path/to/models:/models:ro accllm-serve \
#       --model /models/stories260K.bin --devices cpu
#   docker run -p 8000:8000 --entrypoint accllm-gateway accllm-serve \
#       --listen 0.0.0.0:8000 --upstream daemon-host:50051
#
# Build arguments:
#   BASE_IMAGE, RUNTIME_IMAGE  the Debian 12 images of the two stages (scripts/image-test.sh builds
#                              FROM a local root filesystem made by mmdebstrap; no registry needed)
#   XRT_DEB                    a path in the build context to AMD's XRT package (xrt_*-amd64-xrt.deb)
#                              for hosts with real U280 cards; empty: Debian's libxrt, which runs the
#                              CPU and XRT's emulation but not AMD's current card shells
ARG BASE_IMAGE=debian:12
ARG RUNTIME_IMAGE=debian:12-slim

FROM ${BASE_IMAGE} AS build
ARG XRT_DEB=
# The compiler cache: a build cache mount by default; scripts/image-test.sh mounts the test
# command's own (the release build's) and names it here. Paths are hashed relative to /src.
ARG CCACHE_DIR=/root/.cache/ccache
ENV CCACHE_BASEDIR=/src CCACHE_NOHASHDIR=true
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN scripts/setup.sh --build && apt-get install -y --no-install-recommends ccache && rm -rf /var/lib/apt/lists/*
COPY . .
# The flags are the test command's release build's (-Werror included), so that its cache serves.
RUN --mount=type=cache,target=/root/.cache/ccache \
    deploy/image/install-xrt.sh build "${XRT_DEB}" \
 && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DACCLLM_WERROR=ON -DACCLLM_BUILD_TESTS=OFF \
      -DACCLLM_BUILD_BENCH=OFF -DWITH_FPGA=ON -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache \
 && ccache --zero-stats >/dev/null \
 && cmake --build build --target accllm accllm-server accllm-gateway accllm-xclbin \
 && ccache --show-stats >&2 \
 && mkdir -p /out/bin /out/xrt \
 && cp build/server/accllm-server build/gateway/accllm-gateway build/tools/accllm/accllm build/fpga/accllm-xclbin \
      /out/bin/ \
 && strip /out/bin/* \
 && if [ -n "${XRT_DEB}" ]; then cp "${XRT_DEB}" /out/xrt/; fi \
 && rm -rf build

FROM ${RUNTIME_IMAGE}
ARG RUNTIME_IMAGE
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="AccLLM Serve" \
      org.opencontainers.image.description="W2A8KV4 LLM serving: gRPC daemon for Alveo U280 cards and CPUs, OpenAI-compatible gateway" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"
COPY --from=build /out/xrt/ /tmp/xrt/
COPY deploy/image/install-xrt.sh /tmp/install-xrt.sh
# Exactly the shared libraries the binaries link (tests/python/deploy_test.py holds this list
# against ldd), and curl for the gateway's health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libspdlog1.10 libcpp-httplib0.11 libssl3 libopenblas0-pthread \
      curl ca-certificates \
 && /tmp/install-xrt.sh runtime /tmp/xrt \
 && rm -rf /var/lib/apt/lists/* /tmp/xrt /tmp/install-xrt.sh \
 && groupadd --gid 10001 accllm \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin accllm
COPY --from=build /out/bin/ /usr/local/bin/
COPY deploy/k8s/base/server.toml /etc/accllm/server.toml
COPY deploy/image/healthcheck.sh /usr/local/bin/accllm-healthcheck
USER 10001:10001
EXPOSE 50051 9090 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["accllm-healthcheck"]
ENTRYPOINT ["accllm-server"]
CMD ["--config", "/etc/accllm/server.toml"]
