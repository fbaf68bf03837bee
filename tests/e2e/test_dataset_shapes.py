"""Training and evaluation on the same conversations stored in other dataset shapes:
ShareGPT keys with role names of their own (tiny-sharegpt) and alpaca rows (tiny-alpaca).
Every stage that reads rows (data gate, training, eval loss, the golden set through a vLLM
server) reads them as the Axolotl YAML says. What follows the gate (register, deploy,
verify) handles a version's files, not rows: the tiny release in test_release covers it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("model", ["tiny-sharegpt", "tiny-alpaca"])
def test_train_and_evaluate_read_each_dataset_shape(
        model: str, tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path],
        run_llmops: Callable[..., subprocess.CompletedProcess[str]],
        mlflow_client: Callable[[Path], Any]) -> None:
    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    dotenv = tmp_path / "train.env"
    trained = run_llmops("train", model, "--dotenv", str(dotenv), root=root, home=home)
    assert trained.returncode == 0, trained.stderr[-4000:]
    run_id = dotenv.read_text().strip().removeprefix("LLMOPS_RUN_ID=")
    done = run_llmops("evaluate", model, "--candidate", run_id, root=root, home=home)
    assert done.returncode == 0, done.stderr[-4000:]
    metrics = mlflow_client(home).get_run(run_id).data.metrics
    # Evaluation read the eval set (it used to read `messages` only) and the golden set.
    assert metrics["candidate.eval_loss"] < metrics["base.eval_loss"]
    assert "candidate.golden_accuracy" in metrics, sorted(metrics)
