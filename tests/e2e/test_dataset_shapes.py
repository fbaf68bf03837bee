"""Training and evaluation on the same conversations stored in other dataset shapes:
ShareGPT keys with role names of their own (tiny-sharegpt) and alpaca rows (tiny-alpaca).
Every stage that reads rows (data gate, training, eval loss, the golden set through a vLLM
server) reads them as the Axolotl YAML says. What follows the gate (register, deploy,
verify) handles a version's files, not rows: the tiny release in test_release covers it.

The alpaca model goes through a whole release whose gate it cannot pass, so that the same
training and evaluation also show what a failed gate leaves: nothing registered, no server.
Both models serve their adapter as a LoRA module (deploy/local.yml): one evaluation server."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

RunLlmops = Callable[..., subprocess.CompletedProcess[str]]


def test_train_and_evaluate_read_sharegpt_rows(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path], run_llmops: RunLlmops,
        mlflow_client: Callable[[Path], Any]) -> None:
    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    dotenv = tmp_path / "train.env"
    trained = run_llmops("train", "tiny-sharegpt", "--dotenv", str(dotenv), root=root,
                         home=home)
    assert trained.returncode == 0, trained.stderr[-4000:]
    run_id = dotenv.read_text().strip().removeprefix("LLMOPS_RUN_ID=")
    done = run_llmops("evaluate", "tiny-sharegpt", "--candidate", run_id, root=root,
                      home=home)
    assert done.returncode == 0, done.stderr[-4000:]
    metrics = mlflow_client(home).get_run(run_id).data.metrics
    # Evaluation read the eval set (it used to read `messages` only) and the golden set.
    assert metrics["candidate.eval_loss"] < metrics["base.eval_loss"]
    assert "candidate.golden_accuracy" in metrics, sorted(metrics)


def test_an_alpaca_release_reads_its_rows_and_its_failed_gate_registers_nothing(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path], run_llmops: RunLlmops,
        mlflow_client: Callable[[Path], Any]) -> None:
    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    gates = root / "validation" / "tiny-alpaca.yml"
    gates.write_text(gates.read_text().replace("min_gain_over_base: 1.0",
                                               "min_gain_over_base: 100.0"))
    done = run_llmops("release", "tiny-alpaca", root=root, home=home)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "failed its release gate" in done.stderr
    assert "FAILED: eval_loss: gain over base" in done.stderr
    client = mlflow_client(home)
    assert client.search_model_versions("name='tiny-alpaca'") == []
    experiment = client.get_experiment_by_name("tiny-alpaca").experiment_id
    runs = client.search_runs([experiment], filter_string="tags.mlflow.parentRunId IS NULL")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["gate.passed"] == "false"
    # The alpaca rows were read: training lowered the loss on them, short of the gate's 100.
    metrics = runs[0].data.metrics
    assert metrics["candidate.eval_loss"] < metrics["base.eval_loss"], sorted(metrics)
    assert "candidate.golden_accuracy" in metrics, sorted(metrics)
    # Its stages are nested runs: each with its time, the gate's marked as where it ended.
    stages = {r.data.tags["llmops.stage"]: r.info.status for r in client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{runs[0].info.run_id}'")}
    assert stages == {"check-data": "FINISHED", "record-data": "FINISHED",
                      "train": "FINISHED", "evaluate": "FINISHED", "gate": "FAILED"}
    # No deployment was recorded (the evaluation's servers are folders, not records).
    records = home / "deployments"
    assert not records.exists() or list(records.glob("*.json")) == []
