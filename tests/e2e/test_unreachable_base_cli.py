"""A base model this machine cannot reach (a Hub id, offline, no copy in the Hub's cache) is
refused by the installed `llmops` in one line, exit 2, at check-config and before a
release starts Prefect: no retries, no run."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

RunLlmops = Callable[..., subprocess.CompletedProcess[str]]
REFUSAL = ("axolotl_configs/tiny.yml: base_model: org/name is a Hugging Face Hub id, and "
           "this machine has no copy of it and cannot download it (HF_HUB_OFFLINE is set): "
           "point base_model at a local copy instead, the path of a folder")


@pytest.mark.parametrize("command", [["check-config", "tiny"], ["release", "tiny"]])
def test_an_unreachable_hub_base_is_refused_in_one_line(
        command: list[str], tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        run_llmops: RunLlmops) -> None:
    root, home = repo_copy_factory(tmp_path), tmp_path / "home"
    yml = root / "axolotl_configs" / "tiny.yml"
    yml.write_text(yml.read_text().replace("base_model: .llmops/models/tiny-llama",
                                           "base_model: org/name"))
    done = run_llmops(*command, root=root, home=home, timeout=300, installed=True,
                      extra_env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if "base_model: org/name" in line]
    assert len(lines) == 1 and REFUSAL in lines[0], done.stderr
    assert "retry" not in done.stderr.lower() and "Error logging to API" not in done.stderr
    assert not (home / "prefect" / "api.log").exists()  # Prefect's server never started
    assert not (home / "runs").exists()
