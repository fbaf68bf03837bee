#!/usr/bin/env bash
# Native libraries that the CPU runs load: TCMalloc (Debian's libtcmalloc-minimal4), which
# PyTorch's and vLLM's CPU guides preload. Training and serving run without it, slower:
# llmops preloads it only where the loader finds it.
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'libtcmalloc_minimal\.so\.4 '; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing libtcmalloc-minimal4 (Debian)"
  apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q libtcmalloc-minimal4 >/dev/null; }
else
  echo "setup: libtcmalloc-minimal4 is missing; training and serving on the CPU run slower" \
       "without it (install it with: sudo apt-get install libtcmalloc-minimal4)" >&2
fi
