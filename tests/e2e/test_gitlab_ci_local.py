"""The tag pipeline of .gitlab-ci.yml, run for real by gitlab-ci-local (shell executor) on
CPU: tiny model, the local MLflow store, and the GitLab emulator as the model registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from gitlab_emulator import GitlabEmulator

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
GCL = Path(".tools") / "node_modules" / ".bin" / "gitlab-ci-local"  # in the repository
TAG_JOBS = ["validate", "train", "evaluate", "register", "deploy-staging", "verify-staging",
            "deploy-production", "gitlab-release"]


def scratch_clone(tmp_path: Path, repo: Path) -> Path:
    """A clone of this commit whose origin looks like GitLab, with the environments linked."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    subprocess.run(["git", "remote", "set-url", "origin",
                    "https://gitlab.example.com/ml/llmops.git"], cwd=clone, check=True)
    for venv in (".venv", ".venv-serve"):
        (clone / venv).symlink_to(repo / venv)
    return clone


def test_tag_pipeline_runs_every_job(
        tmp_path: Path, repo_root: Path, fresh_home: Callable[[Path], Path],
        run_llmops: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    gcl = repo_root / GCL
    if not gcl.exists():
        pytest.fail("gitlab-ci-local is not installed: run `bash scripts/setup-ci-tools.sh`")
    clone, home = scratch_clone(tmp_path, repo_root), fresh_home(tmp_path)
    with GitlabEmulator() as gl:
        token = gl.state.api_token
        variables = {
            "CI_COMMIT_TAG": "v0.1.0", "MODEL": "tiny", "STAGING_ENV": "local",
            "PRODUCTION_ENV": "local", "LLMOPS_HOME": str(home), "LLMOPS_QUIET_TRAIN": "1",
            "LLMOPS_USE_EXISTING_VENVS": "1", "LLMOPS_REGISTRY_URI": gl.tracking_uri,
            "LLMOPS_REGISTRY_TOKEN": token, "GITLAB_URL": gl.url, "GITLAB_TOKEN": token,
            "GITLAB_PROJECT": "1",
        }
        cmd = [str(gcl), "--force-shell-executor", "--unset-variable", "CI_COMMIT_BRANCH",
               "--manual", "deploy-production", "--ignore-predefined-vars", "CI_COMMIT_TAG"]
        for key, value in variables.items():
            cmd += ["--variable", f"{key}={value}"]
        env = {k: v for k, v in os.environ.items()
               if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "LLMOPS_ROOT")}
        try:
            done = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True,
                                  timeout=3000)
            output = done.stdout + done.stderr
            (tmp_path / "pipeline.log").write_text(output)
            assert done.returncode == 0, output[-6000:]
            for job in TAG_JOBS:
                assert f"{job} finished in" in output or f"PASS  {job}" in output, job
            assert "lint-and-test" not in output  # not a merge-request or branch pipeline
            assert token not in output  # never echoed
            # Registered in GitLab's model registry (emulated) as the tag's version, with
            # every file once; served locally; release notes built from the registry.
            assert [(v.name, v.semver) for v in gl.state.versions.values()] == [("tiny", "0.1.0")]
            assert gl.duplicate_files() == 0
            record = json.loads((home / "deployments" / "tiny-local.json").read_text())
            assert record["version"] == "0.1.0"
            assert "release notes for tiny 0.1.0" in output
        finally:
            run_llmops("stop", "tiny", root=clone, home=home)
            shutil.rmtree(clone / ".gitlab-ci-local", ignore_errors=True)
