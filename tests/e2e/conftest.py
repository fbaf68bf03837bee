"""Fixtures of the end-to-end tests: the tiny base model, and the helpers every end-to-end
module shares (the `llmops` runner, a scratch copy of the repository, a state dir holding
the tiny base model, an MLflow client on a state dir). Test modules take them as fixtures;
they never import them from another test module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# The repository's declarative folders: what `llmops` reads from LLMOPS_ROOT.
# requirements/: serve.lock pins the engine version deploy/ must serve (llmops.serve.vllm_release).
DECLARATIVE = ("axolotl_configs", "validation", "deploy", "registry", "datasets", "flows",
               "requirements")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository itself (read only: copy it with `repo_copy_factory` to edit it)."""
    return REPO


@pytest.fixture(scope="session")
def tiny_base(shared_home: Path) -> Path:
    """Build the tiny base model once per session; tests copy it into their own home."""
    from llmops.models.base import build_tiny_llama

    out = shared_home / "models" / "tiny-llama"
    if not (out / "config.json").is_file():
        old = os.environ.get("LLMOPS_ROOT")
        os.environ["LLMOPS_ROOT"] = str(REPO)
        try:
            build_tiny_llama(out)
        finally:
            os.environ.pop("LLMOPS_ROOT") if old is None else os.environ.update(LLMOPS_ROOT=old)
    return out


def _llmops(
    *args: str, root: Path, home: Path, timeout: float = 1200,
    extra_env: dict[str, str] | None = None, installed: bool = False,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMOPS_ROOT": str(root), "LLMOPS_HOME": str(home),
           "LLMOPS_QUIET_TRAIN": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    env.update(extra_env or {})
    command = [str(Path(sys.executable).parent / "llmops")] if installed else \
        [sys.executable, "-m", "llmops.cli.main"]
    return subprocess.run([*command, *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_llmops() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_llmops(*args, root=, home=, timeout=1200, extra_env=None, installed=False)`: the
    CLI in a subprocess with LLMOPS_ROOT and LLMOPS_HOME set (and no tracking or Prefect
    server inherited from the caller's environment); returns the CompletedProcess (text).
    `installed`: through the installed `llmops` entry point (the environment's bin/), as a
    person runs it, instead of `python -m`. `timeout` is the hang guard: past it,
    subprocess.TimeoutExpired."""
    return _llmops


@pytest.fixture(scope="session")
def repo_copy_factory() -> Callable[[Path], Path]:
    """`repo_copy_factory(base)`: a copy of the repository's declarative folders under
    base/repo, safe to edit; returns it (pass it as `root=`). Session-scoped, so that
    module-scoped fixtures can use it too (with a folder from `tmp_path_factory`)."""

    def copy_repo(base: Path) -> Path:
        root = base / "repo"
        for folder in DECLARATIVE:
            shutil.copytree(REPO / folder, root / folder)
        return root

    return copy_repo


@pytest.fixture(scope="session")
def fresh_home(tiny_base: Path) -> Callable[[Path], Path]:
    """`fresh_home(base)`: a state dir base/home holding a copy of the tiny base model;
    returns it (pass it as `home=`)."""

    def make(base: Path) -> Path:
        home = base / "home"
        shutil.copytree(tiny_base, home / "models" / "tiny-llama")
        return home

    return make


@pytest.fixture(scope="session")
def mlflow_client() -> Callable[[Path], Any]:
    """`mlflow_client(home)`: an MlflowClient on the local store of a state dir."""

    def client(home: Path) -> Any:
        import mlflow

        return mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")

    return client
