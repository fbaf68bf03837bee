"""Where things live: the repository (declarative state) and `.llmops/` (embedded state).

Nothing here touches the disk at import time; every function resolves on call so that
`LLMOPS_ROOT` / `LLMOPS_HOME` set by a test or a CI job take effect.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmops.errors import UsageError


def repo_root() -> Path:
    """The checkout holding `axolotl_configs/`: `$LLMOPS_ROOT`, else the nearest parent of cwd."""
    if env := os.environ.get("LLMOPS_ROOT"):
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "axolotl_configs").is_dir():
            return candidate
    raise UsageError(
        f"no axolotl_configs/ folder in {here} or its parents: run llmops from the "
        "repository, or set LLMOPS_ROOT to it"
    )


def state_dir() -> Path:
    """Embedded state (MLflow store, Prefect home, models, deployments): `$LLMOPS_HOME`."""
    env = os.environ.get("LLMOPS_HOME")
    return Path(env).resolve() if env else repo_root() / ".llmops"


def state_subdir(name: str) -> Path:
    """A folder under the state dir, created on demand."""
    path = state_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def machine_cache() -> Path:
    """Per-machine caches that outlive a checkout and its state: ~/.cache/llmops (the
    compute plan's speeds, vLLM's model-info and compile caches)."""
    return Path.home() / ".cache" / "llmops"


def resolve_in_repo(path: str | Path) -> Path:
    """A path from a YAML file: absolute as is, relative to the repository root otherwise."""
    p = Path(path)
    return p if p.is_absolute() else repo_root() / p


def run_folder(model: str, run_id: str) -> Path:
    """Where a run's adapter, checkpoints and reports live (CI passes it between jobs)."""
    return state_subdir("runs") / model / run_id
