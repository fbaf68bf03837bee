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

from llmops.serve import process

SECRET = "glpat-Lineage0Secret0Value"
CI = {"gitlab.CI_PIPELINE_ID": "77", "gitlab.CI_JOB_ID": "42",
      "gitlab.CI_PIPELINE_URL": "https://gl.example/group/llmops/-/pipelines/77",
      # a URL that leaked a token into a tag: the output must not show it
      "gitlab.CI_JOB_URL": f"https://gl.example/group/llmops/-/jobs/42?private_token={SECRET}",
      "gitlab.CI_COMMIT_TAG": "v0.1.0"}


def version_folder(base: Path) -> Path:
    """A registered version's files, as `build_package` writes them (no weights needed)."""
    folder = base / "pkg"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "data_report.json").write_text(json.dumps({"datasets": [
        {"path": "datasets/support-bot/train.jsonl", "split": "train", "examples": 412,
         "sha256": "a1" * 32},
        {"path": "datasets/support-bot/eval.jsonl", "split": "eval", "examples": 40,
         "sha256": "b2" * 32}]}))
    (folder / "gate_report.json").write_text(json.dumps({"passed": True, "rules": [
        {"metric": "golden_accuracy", "candidate": 0.82, "threshold": ">= 0.6",
         "passed": True, "reason": "golden_accuracy 0.82 >= 0.6"}]}))
    (folder / "gate_report.md").write_text("## Gate report: support-bot — PASSED\n")
    (folder / "axolotl.yml").write_text("base_model: /m/smollm2\nadapter: lora\nlora_r: 16\n"
                                        "learning_rate: 0.0002\nmax_steps: 60\n")
    (folder / "cost.json").write_text(json.dumps({
        "train": {"device": "cpu", "devices": 1, "seconds": 324.0, "cpu_cores": 2,
                  "device_hours": 0.09},
        "eval": {"device": "cpu", "devices": 1, "seconds": 72.0, "cpu_cores": 2,
                 "device_hours": 0.02}}))
    return folder


def tags(run_id: str) -> dict[str, str]:
    return {"run_id": run_id, "base_model": "/m/smollm2", "base_model.digest": "sha256:base",
            "gate.passed": "true", "mlflow.source.git.commit": "c0ffee" * 6 + "cafe",
            "git.dirty": "false", **CI,
            "cost.train.device": "cpu", "cost.train.devices": "1",
            "cost.train.seconds": "324.0", "cost.train.device_hours": "0.09"}


def a_run(client: Any, artifacts: Path) -> str:
    experiment = client.create_experiment("support-bot", artifacts.as_uri())
    run = client.create_run(experiment, run_name="support-bot-0.1.0")
    for key, value in {"axolotl.lora_r": "16", "axolotl.learning_rate": "0.0002"}.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, "FINISHED")
    return str(run.info.run_id)


def served(tokens_per_s: float) -> None:
    """A verified local deploy with its load test, priced at 0.10 USD per machine-hour."""
    load = {"requests": 64, "tokens_per_s": tokens_per_s}
    process.record_event("support-bot", "local", "0.1.0", "deploy", "serving",
                         reason=f"load: {load}", extra={"load": load, "serving_cost": {
                             "device": "cpu", "devices": 1, "tokens_per_s": tokens_per_s,
                             "price_per_device_hour": 0.1, "currency": "USD",
                             "cost_per_million_tokens": 0.1 / (tokens_per_s * 3600) * 1e6}})


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
