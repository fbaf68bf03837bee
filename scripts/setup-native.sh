#!/usr/bin/env bash
# Native libraries that the CPU runs load: TCMalloc (Debian's libtcmalloc-minimal4), which
# PyTorch's and vLLM's CPU guides preload. Training and serving run without it, slower:
# llmops preloads it only where the loader finds it.
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'libtcmalloc_minimal\.so\.4 '; then
  exit 0
fi
bash "$(dirname "$0")/apt-install.sh" libtcmalloc-minimal4 ||
  echo "setup: libtcmalloc-minimal4 is missing; training and serving on the CPU run slower" \
       "without it (install it with: sudo apt-get install libtcmalloc-minimal4)" >&2
