#!/usr/bin/env bash
# Optional system packages: OpenBLAS makes MLX's fp32 CPU matmuls fast on Linux.
set -euo pipefail
[ "$(uname -s)" = Linux ] || exit 0
if ls /usr/lib/*/openblas-pthread/libopenblas*.so* >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing libopenblas0-pthread (fast CPU BLAS for MLX workers)..."
  (apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 \
    || (apt-get update -qq && apt-get install -y -qq libopenblas0-pthread >/dev/null)) \
    || echo "warning: could not install libopenblas0-pthread; MLX will use its slow reference BLAS" >&2
else
  echo "note: install libopenblas0-pthread (sudo apt-get install libopenblas0-pthread) for fast CPU workers" >&2
fi
