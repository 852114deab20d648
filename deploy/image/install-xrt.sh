#!/bin/sh
# XRT in the image: Debian's libxrt (default), or AMD's XRT package for real U280 cards.
#   install-xrt.sh build [PACKAGE.deb]      build stage (Debian's libxrt-dev came with setup.sh)
#   install-xrt.sh runtime DIR              runtime stage: DIR holds AMD's package, or is empty
set -eu
stage=$1
package=${2:-}
case "$stage" in
  build)
    # AMD's XRT installs under /opt/xilinx/xrt, where cmake/FindXRT.cmake looks first.
    if [ -n "$package" ]; then
      apt-get update && apt-get install -y --no-install-recommends "./$package"
    fi ;;
  runtime)
    amd=$(find "$package" -name '*.deb' 2>/dev/null | head -n 1)
    if [ -n "$amd" ]; then
      apt-get install -y --no-install-recommends "$amd"
      # The binaries find /opt/xilinx/xrt/lib through ld.so's path, not XRT's setup.sh.
      echo /opt/xilinx/xrt/lib > /etc/ld.so.conf.d/xrt.conf && ldconfig
    else
      apt-get install -y --no-install-recommends libxrt1
    fi ;;
  *) echo "usage: $0 build|runtime ..." >&2; exit 2 ;;
esac
