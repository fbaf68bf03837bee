#!/usr/bin/env bash
# Re-hash the CPU locks after a pin changed: requirements/{pipeline,serve,uv}.lock keep their
# exact versions (--no-deps: nothing is re-resolved) and get the sha256 of every file PyPI
# serves for each (uv pip compile --generate-hashes), for Linux x86_64 and CPython 3.11.
# torch's CPU build (+cpu) is not on PyPI: it is hashed from the wheel folders and indexes
# this machine's pip is set up with (scripts/setup.sh hands uv the same), e.g. a local copy
# of PyTorch's CPU wheel. The GPU lock is made with its hashes by scripts/lock-gpu.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
UV=$(bash scripts/uv.sh)
export UV_SYSTEM_CERTS=${UV_SYSTEM_CERTS:-1}  # as scripts/setup.sh
sources=() folders=()
for url in $("$PYTHON" -m pip config get global.find-links 2>/dev/null || true); do
  sources+=(--find-links "$url")
  [ -d "$url" ] && folders+=("$url")
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for name in pipeline serve uv; do
  lock=requirements/$name.lock
  grep '^#' "$lock" > "$work/header" || true
  "$UV" pip compile -q "$lock" --no-deps --generate-hashes --no-header --no-annotate \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --index-strategy unsafe-best-match "${sources[@]}" -o "$work/body"
  # A file that no index lists with its sha256 (a local wheel): hash it where it lies.
  while read -r pin; do
    file=$(find "${folders[@]}" -maxdepth 1 -name "$(echo "${pin%%==*}" | tr - _)-${pin#*==}-*.whl" |
      head -1)
    [ -n "$file" ] || { echo "lock-hashes: no file to hash for $pin" >&2; exit 1; }
    sed -i "s|^$pin\$|$pin \\\\\n    --hash=sha256:$(sha256sum "$file" | cut -d' ' -f1)|" \
      "$work/body"
  done < <(grep -E '^[A-Za-z].*==[^ ]+$' "$work/body" || true)
  cat "$work/header" "$work/body" > "$lock"
  echo "lock-hashes: $lock ($(grep -c '^[A-Za-z]' "$lock") packages)"
done
