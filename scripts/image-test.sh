#!/usr/bin/env bash
# Builds the image from the Dockerfile without a Docker daemon or a registry, and serves a
# completion from inside it: mmdebstrap makes a Debian 12 root filesystem from the apt mirror,
# buildah turns it into a local base image (kept between runs: rebuilt when older than a week),
# builds the Dockerfile FROM it, and runs the daemon and the gateway in the image
# (tests/python/image_test.py) while curl streams a completion from outside.
#   scripts/image-test.sh [MODELS_DIR]        (default ../shared/models; needs root, or sudo)
# Environment: ACCLLM_IMAGE (default localhost/accllm-serve:test), ACCLLM_IMAGE_KEEP=1 keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
models=$(realpath "${1:-${ACCLLM_MODELS_DIR:-../shared/models}}")
image=${ACCLLM_IMAGE:-localhost/accllm-serve:test}
base=localhost/accllm-base:bookworm
for tool in mmdebstrap buildah curl; do
  command -v $tool >/dev/null || { echo "image-test: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
if [ "$(id -u)" -ne 0 ]; then exec sudo --preserve-env=ACCLLM_IMAGE,ACCLLM_IMAGE_KEEP,CCACHE_DIR "$0" "$models"; fi
# buildah's defaults need kernel features this kind of sandbox lacks: chroot isolation, and the
# host's network (the build stage runs apt-get).
isolation=(--isolation=chroot)

started=$(date +%s)
created=$(buildah inspect --type image --format '{{.Docker.Created.Unix}}' "$base" 2>/dev/null || echo 0)
if [ $((started - created)) -gt $((7 * 24 * 3600)) ]; then
  echo "== image-test: base image $base from the apt mirror (mmdebstrap, minbase)"
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  mmdebstrap --quiet --variant=minbase --format=tar bookworm "$scratch/rootfs.tar" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  container=$(buildah from scratch)
  buildah add --quiet "$container" "$scratch/rootfs.tar" /
  buildah config --cmd /bin/bash --env LANG=C.UTF-8 "$container"
  buildah commit --quiet --rm "$container" "$base" >/dev/null
  rm -rf "$scratch"
  trap - EXIT
fi
echo "== image-test: base ready after $(( $(date +%s) - started )) s"

# --layers caches each step: the packages of both stages are installed once, and the compile
# step's ccache (a cache mount) makes a rebuild after a small change quick. Under scripts/test.sh
# the compile step uses the release build's cache instead ($CCACHE_DIR, mounted), which already
# holds every object it needs.
shared_cache=()
if [ -n "${CCACHE_DIR:-}" ] && [ -d "$CCACHE_DIR" ]; then
  shared_cache=(-v "$CCACHE_DIR:/ccache-shared" --build-arg CCACHE_DIR=/ccache-shared)
fi
buildah bud --quiet --layers --pull=never --format=docker "${isolation[@]}" "${shared_cache[@]}" \
  --build-arg BASE_IMAGE="$base" --build-arg RUNTIME_IMAGE="$base" -t "$image" . >/dev/null
echo "== image-test: $image built after $(( $(date +%s) - started )) s"

python3 tests/python/image_test.py "$image" "$models"
if [ "${ACCLLM_IMAGE_KEEP:-0}" != 1 ]; then buildah rmi "$image" >/dev/null; fi
echo "== image-test: passed in $(( $(date +%s) - started )) s"
