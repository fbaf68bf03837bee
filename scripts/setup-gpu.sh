#!/usr/bin/env bash
# A GPU machine (the train job's image, docker/trainer.Dockerfile, or your own CUDA box):
# .venv from requirements/gpu.lock (CUDA torch, Axolotl, MLflow, ...) with scripts/setup.sh,
# the same way `make setup` builds the CPU one; no .venv-serve (serving runs elsewhere).
# Needs Python 3.11: installed with apt (scripts/apt-install.sh) when root and missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${LLMOPS_USE_EXISTING_VENVS:-}" != 1 ] && ! command -v python3.11 >/dev/null; then
  bash scripts/apt-install.sh python3.11 python3.11-venv || {
    echo "setup-gpu: Python 3.11 is missing: install python3.11 and python3.11-venv" >&2
    exit 2; }
fi
LLMOPS_LOCK=requirements/gpu.lock LLMOPS_SERVE_LOCK="" exec bash scripts/setup.sh
