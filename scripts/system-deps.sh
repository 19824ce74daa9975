#!/usr/bin/env bash
# Optional system packages, by purpose (`system-deps.sh demo` or `system-deps.sh test`):
#   demo: OpenBLAS makes MLX's fp32 CPU matmuls fast on Linux (all a worker needs).
#   test: the demo's packages, plus Chromium (renders the gateway's dashboard in its test),
#         colord-data (Adobe RGB) and libgs-common (a SWOP CMYK profile; data only, no
#         Ghostscript) for the photo tests' real ICC profiles, iproute2 and nftables for the
#         network namespaces of the multi-host fault test, exiftool (reads stored PNG uploads
#         back in the photo privacy test).
# Each is installed once, quietly, as root.
set -euo pipefail
purpose="${1:-test}"
case "$purpose" in
  demo | test) ;;
  *) echo "usage: $0 demo|test (demo: what a worker needs; test: that plus the tests' tools)" >&2; exit 2 ;;
esac
[ "$(uname -s)" = Linux ] || exit 0

# install PACKAGE WHY WITHOUT: apt-get it (updating the index once if needed), else say why it matters.
install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing $1 ($2)..."
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null 2>&1 \
      || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null)) \
      || echo "warning: could not install $1; $3" >&2
  else
    echo "note: install $1 (sudo apt-get install $1) for $2" >&2
  fi
}

if ! ls /usr/lib/*/openblas-pthread/libopenblas*.so* >/dev/null 2>&1; then
  install libopenblas0-pthread "fast CPU BLAS for MLX workers" \
    "MLX will use its slow reference BLAS"
fi
[ "$purpose" = test ] || exit 0

if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  install chromium "the dashboard test's headless browser" \
    "the dashboard test skips locally and fails in CI"
fi
if [ ! -f /usr/share/color/icc/colord/AdobeRGB1998.icc ]; then
  install colord-data "the photo tests' Adobe RGB profile" \
    "the Adobe RGB photo test skips locally and fails in CI"
fi
if [ ! -f /usr/share/color/icc/ghostscript/default_cmyk.icc ]; then
  install libgs-common "the photo tests' CMYK profile" \
    "the CMYK photo tests skip locally and fail in CI"
fi
if ! command -v ip >/dev/null; then
  install iproute2 "the multi-host fault test's network namespaces" \
    "the multi-host fault test skips locally and fails in CI"
fi
if ! command -v nft >/dev/null; then
  install nftables "cutting a worker host off PostgreSQL in the multi-host fault test" \
    "the multi-host fault test skips locally and fails in CI"
fi
if ! command -v exiftool >/dev/null; then
  install libimage-exiftool-perl "reading stored PNG uploads back as exiftool would (photo tests)" \
    "the exiftool half of the PNG privacy test is skipped"
fi
