"""Shared fixtures: a scratch state dir per test that needs one; nothing autouse-heavy."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def repo_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the repository's declarative folders, used as LLMOPS_ROOT (safe to edit)."""
    root = tmp_path / "repo"
    for folder in ("axolotl_configs", "validation", "deploy", "registry", "datasets", "flows"):
        shutil.copytree(REPO / folder, root / folder)
    monkeypatch.setenv("LLMOPS_ROOT", str(root))
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "state"))
    yield root


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state dir for the session's slow tests, so that base models are built once."""
    home = Path(os.environ.get("LLMOPS_TEST_HOME") or tmp_path_factory.mktemp("llmops-home"))
    home.mkdir(parents=True, exist_ok=True)
    return home
