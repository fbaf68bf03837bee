"""Shared fixtures: a scratch state dir per test that needs one; nothing autouse-heavy."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def repo_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the repository's declarative folders, used as LLMOPS_ROOT (safe to edit)."""
    root = tmp_path / "repo"
    for folder in ("axolotl_configs", "validation", "deploy", "registry", "datasets", "flows",
                   "requirements"):  # serve.lock: the engine version deploy/ must serve
        shutil.copytree(REPO / folder, root / folder)
    monkeypatch.setenv("LLMOPS_ROOT", str(root))
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "state"))
    yield root


@pytest.fixture(autouse=True)
def _registry_state_home(request: pytest.FixtureRequest,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/registry/: a scratch state folder. Registering signs each version with the key
    the project makes in its state folder on first use, which must not land in the
    checkout's `.llmops/`."""
    if "registry" in request.node.path.parent.parts[-1:]:
        home = request.getfixturevalue("tmp_path") / "state"
        monkeypatch.setenv("LLMOPS_HOME", str(home))


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state dir for the session's slow tests, so that base models are built once."""
    home = Path(os.environ.get("LLMOPS_TEST_HOME") or tmp_path_factory.mktemp("llmops-home"))
    home.mkdir(parents=True, exist_ok=True)
    return home


def _asked_for(config: pytest.Config, marker: str) -> bool:
    """True when the -m expression names the marker (`-m slow`, `-m "slow and not gpu"`)."""
    return marker in (config.getoption("markexpr") or "").replace("not " + marker, "")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A bare `pytest` is safe anywhere: `slow` tests run only when -m asks for them, and
    `gpu` tests skip themselves without a CUDA device."""
    run_slow = _asked_for(config, "slow")
    gpu_items = [item for item in items if "gpu" in item.keywords]
    cuda = _has_cuda() if gpu_items else False
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with -m slow (make test-slow)"))
        if "gpu" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="gpu: needs a CUDA device"))


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Kubernetes 1.20 control plane on 127.0.0.1 with three simulated nodes of one A100 each
    (tests/k8s_sim): built once per machine by scripts/k8s-sim/build.sh, started once per
    session (about 10 s), stopped at its end. Tests share it: each works in its own
    namespace and deletes what holds GPUs when done. For `slow` tests only."""
    from k8s_sim.cluster import Cluster, build

    cluster = Cluster(build(), tmp_path_factory.mktemp("k8s"), gpus=1, nodes=3,
                      labels={"nvidia.com/gpu.product": "nvidia-a100-80gb"}).start()
    try:
        yield cluster
    finally:
        cluster.stop()
