"""Opt-in: the GitLab registry backend against a real GitLab (GITLAB_URL, GITLAB_TOKEN,
GITLAB_PROJECT with the model registry enabled). Skipped when they are not set."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from llmops.registry.gitlab import GitlabRegistry

NEEDED = ("GITLAB_URL", "GITLAB_TOKEN", "GITLAB_PROJECT")
pytestmark = pytest.mark.skipif(not all(os.environ.get(k) for k in NEEDED),
                                reason="set GITLAB_URL, GITLAB_TOKEN, GITLAB_PROJECT to run")


def test_register_and_read_back_on_real_gitlab(tmp_path: Path) -> None:
    reg = GitlabRegistry(os.environ["GITLAB_URL"], os.environ["GITLAB_PROJECT"],
                         os.environ["GITLAB_TOKEN"])
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 8}')
    version = f"0.0.{int(time.time())}"
    mv = reg.register("llmops-opt-in-test", folder, "none", version, {"gate.passed": "true"})
    assert reg.get("llmops-opt-in-test", version).digest == mv.digest
    out = reg.download(mv, tmp_path / "out")
    assert (out / "adapter_config.json").read_text() == '{"r": 8}'
