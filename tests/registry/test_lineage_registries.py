"""`llmops lineage support-bot 0.1.0` prints the whole chain, with the version in GitLab's
model registry (the emulator) and in MLflow's (an embedded store, through the CLI in a
subprocess): datasets with sha256, the run and its config, commit and CI pipeline/job, the
gate decision, version and digest, deployments with their serving cost; no secret."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gitlab_emulator import GitlabEmulator
from registered_version import SECRET, a_run, served, tags, version_folder


def check_chain(out: str, run_id: str, digest: str) -> None:
    assert SECRET not in out, out
    for expected in ("support-bot 0.1.0", digest, "a1" * 32, "b2" * 32,
                     "datasets/support-bot/train.jsonl (412 examples)",
                     f"training run: {run_id} (support-bot-0.1.0, FINISHED, experiment "
                     "support-bot", "2 axolotl.* params", "lora_r=16", "max_steps=60",
                     "git commit: " + "c0ffee" * 6 + "cafe",
                     "CI pipeline: https://gl.example/group/llmops/-/pipelines/77 (id 77)",
                     "CI job: https://gl.example/group/llmops/-/jobs/42", "(id 42)",
                     "CI tag: v0.1.0", "gate: PASSED (1 rules)",
                     "pass: golden_accuracy 0.82 >= 0.6", "base model: /m/smollm2 (sha256:base)",
                     "training   0.09 device-hours (1 × cpu, 324.0 s)",
                     "evaluation 0.02 device-hours (1 × cpu, 72.0 s)",
                     "local", "deploy serving  50 tokens/s on 1 × cpu, "
                     "0.5556 USD per million tokens"):
        assert expected in out, (expected, out)


@pytest.fixture()
def tracking(repo_copy: Path, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(uri)
    yield client, uri


def test_lineage_through_gitlabs_registry(tracking: tuple[Any, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Runs in an MLflow store, versions in GitLab (LLMOPS_REGISTRY_URI)."""
    from llmops.cli import commands
    from llmops.redact import forget_all
    from llmops.registry.gitlab import GitlabRegistry

    client, _ = tracking
    run_id = a_run(client, tmp_path / "artifacts")
    with GitlabEmulator() as gl:
        reg = GitlabRegistry(gl.url, "1", gl.state.api_token, retry_wait_s=0.01)
        mv = reg.register("support-bot", version_folder(tmp_path), run_id, "0.1.0",
                          tags(run_id))
        served(50.0)
        monkeypatch.setenv("LLMOPS_REGISTRY_URI", gl.tracking_uri)
        monkeypatch.setenv("LLMOPS_REGISTRY_TOKEN", gl.state.api_token)
        monkeypatch.setenv("GITLAB_TOKEN", SECRET)  # remembered as a secret by Settings
        try:
            commands.cmd_lineage(argparse.Namespace(model="support-bot", version="0.1.0",
                                                    json=False))
            out = capsys.readouterr().out
            assert "GitLab model registry" in out
            check_chain(out, run_id, mv.digest)
            # Without a version: GitLab cannot list them, the history names 0.1.0.
            commands.cmd_lineage(argparse.Namespace(model="support-bot", version=None,
                                                    json=True))
            record = json.loads(capsys.readouterr().out)
        finally:
            forget_all()
    assert record["version"] == "0.1.0" and record["digest"] == mv.digest
    assert record["deployments"][0]["cost_per_million_tokens"] == pytest.approx(0.555556)
    assert SECRET not in json.dumps(record)


def test_llmops_lineage_on_the_local_mlflow_registry(tracking: tuple[Any, str],
                                                     repo_copy: Path, tmp_path: Path) -> None:
    """The CLI itself, as a person runs it: `llmops lineage support-bot 0.1.0`."""
    from llmops.registry.base import MlflowRegistry

    client, uri = tracking
    run_id = a_run(client, tmp_path / "artifacts")
    mv = MlflowRegistry().register("support-bot", version_folder(tmp_path), run_id, "0.1.0",
                                   tags(run_id))
    served(50.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    env.update(MLFLOW_TRACKING_URI=uri, GITLAB_TOKEN=SECRET,
               LLMOPS_ROOT=str(repo_copy), LLMOPS_HOME=os.environ["LLMOPS_HOME"])
    done = subprocess.run([sys.executable, "-m", "llmops.cli", "lineage", "support-bot",
                           "0.1.0"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "MLflow model registry" in done.stdout
    check_chain(done.stdout, run_id, mv.digest)
    assert SECRET not in done.stderr


def test_each_stage_logs_its_compute_to_the_run(tracking: tuple[Any, str],
                                                tmp_path: Path) -> None:
    from llmops.serve.cost import Compute
    from llmops.stages.runs import Run, log_compute, read_compute

    client, _ = tracking
    run = Run("support-bot", a_run(client, tmp_path / "artifacts"), "support-bot-0.1.0")
    log_compute(run, "train", Compute("gpu", 8, 1800.0, 64))
    log_compute(run, "eval", Compute("cpu", 1, 360.0, 2))
    assert read_compute(run.folder) == {"train": Compute("gpu", 8, 1800.0, 64),
                                        "eval": Compute("cpu", 1, 360.0, 2)}
    data = client.get_run(run.run_id).data
    assert data.tags["cost.train.device_hours"] == "4.0"
    assert data.tags["cost.train.device"] == "gpu" and data.tags["cost.eval.devices"] == "1"
    assert data.metrics["cost.train_device_hours"] == 4.0
    assert data.metrics["cost.eval_device_hours"] == 0.1
