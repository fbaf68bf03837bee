"""The MLflow UI in a real browser: headless Chromium on the runs page and on the compare
view of two releases of a store made the way a release writes it (the experiment's kind,
a logged model per run, datasets as inputs, nested stage runs), in seconds, without a
release. scripts/mlflow_screenshots.py takes the screenshots and reads the pages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MODEL = "ui-bot"


def two_releases(home: Path, uri: str) -> None:
    """Two finished releases of MODEL, each with its adapter as a logged model, its
    datasets, metrics linked to the model, a nested `train` stage, and a registered version
    pointing at the model."""
    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from llmops.registry.base import MlflowRegistry
    from llmops.stages.runs import Run, finish_run, log_candidate_model, mlflow_client, stage_run
    from llmops.tracking import experiment_id

    mlflow.set_tracking_uri(uri)
    client = mlflow_client()
    for i, loss in ((1, 1.9), (2, 1.4)):
        name = f"{MODEL}-0.{i}.0"
        run = Run(MODEL, client.create_run(experiment_id(MODEL), run_name=name,
                                           tags={"llmops.model": MODEL}).info.run_id, name)
        client.log_inputs(run.run_id, [DatasetInput(
            Dataset(name=f"{split}.jsonl", digest=f"{i}{split}"[:32], source_type="local",
                    source=json.dumps({"uri": f"datasets/{MODEL}/{split}.jsonl"})),
            [InputTag("mlflow.data.context", split)]) for split in ("train", "eval")])
        with stage_run(run, "train"):
            for step in (1, 2):
                client.log_metric(run.run_id, "train.loss", loss + 1 / step, step=step)
            adapter = home / run.run_id
            adapter.mkdir(parents=True)
            (adapter / "adapter_config.json").write_text('{"r": 8}')
            (adapter / "adapter_model.safetensors").write_bytes(b"w" * 64)
            model_id = log_candidate_model(run, adapter, "tiny-llama")
        client.log_metric(run.run_id, "candidate.eval_loss", loss, model_id=model_id)
        MlflowRegistry().register(MODEL, adapter, run.run_id, f"0.{i}.0",
                                  {"base_model": "tiny-llama"})
        finish_run(run, True)


def test_the_runs_page_shows_each_release_with_its_model_and_datasets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no chromium: scripts/setup-ci-tools.sh installs it")
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "state"))
    two_releases(tmp_path / "adapters", uri)

    out = Path(os.environ.get("LLMOPS_SCREENSHOTS", tmp_path / "shots"))
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "mlflow_screenshots.py"),
         "--backend-store-uri", uri, "--experiment", MODEL, "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    summary = json.loads(done.stdout)
    runs, compare = summary["pages"]["runs"], summary["pages"]["compare"]
    assert summary["expected"]["run_names"] == [f"{MODEL}-0.2.0", f"{MODEL}-0.1.0"]
    assert summary["expected"]["models"] == [MODEL]
    assert summary["expected"]["datasets"] == ["eval.jsonl", "train.jsonl"]
    assert runs["missing"] == [] and not runs["says_traces"], runs
    assert compare["missing"] == [], compare
    assert summary["pages"]["model"]["missing"] == [], summary["pages"]["model"]
    assert (out / "runs.png").stat().st_size > 10_000
    assert (out / "compare.png").stat().st_size > 10_000
    assert (out / "model.png").stat().st_size > 10_000
