#!/usr/bin/env bash
# Print the path of uv at requirements/uv.lock's version, installing it first (with pip, from
# the lock's hashes) into ~/.cache/llmops/uv-<version>, once per machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
version=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements/uv.lock)
home="${XDG_CACHE_HOME:-$HOME/.cache}/llmops/uv-$version"
if [ ! -x "$home/bin/uv" ]; then
  echo "setup: installing uv $version into $home (once per machine)" >&2
  rm -rf "$home.tmp"
  "$PYTHON" -m venv "$home.tmp"
  "$home.tmp/bin/python" -m pip install -q --no-deps --require-hashes -r requirements/uv.lock >&2
  # Its scripts name their interpreter by path: after the move, only uv's binary is called.
  rm -rf "$home" && mv "$home.tmp" "$home"
fi
echo "$home/bin/uv"
