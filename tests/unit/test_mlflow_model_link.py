"""What a team sees in MLflow 3: the experiment opens on its runs (its kind), the candidate
is a logged model linked to its run, its metrics and its registered version, and a stage
is a nested run of the release."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from llmops.registry.base import MlflowRegistry
from llmops.stages.runs import Run, candidate_model_id, log_candidate_model, stage_run
from llmops.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, experiment_id


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import mlflow
    from mlflow.tracking._tracking_service import utils

    # `experiment_id` sets MLflow's current URI; put it back for the modules that follow.
    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)

    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "state"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # another test's store may be MLflow's current one
    return mlflow.MlflowClient(uri)


def a_run(client: Any, model: str, tmp_path: Path) -> tuple[Run, Path]:
    run_id = client.create_run(experiment_id(model), run_name=f"{model}-1").info.run_id
    client.log_metric(run_id, "train.loss", 2.0, step=1)
    client.log_metric(run_id, "train.loss", 1.5, step=2)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (adapter / "checkpoint-2").mkdir()  # not part of the model
    return Run(model, run_id, f"{model}-1"), adapter


def test_the_experiment_is_a_machine_learning_one_new_or_old(store: Any) -> None:
    made = experiment_id("fresh")
    assert store.get_experiment(made).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    old = store.create_experiment("old")  # made before the kind was set
    assert experiment_id("old") == old
    assert store.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_the_candidate_is_a_logged_model_of_its_run_and_its_version(
        store: Any, tmp_path: Path) -> None:
    run, adapter = a_run(store, "linked", tmp_path)
    model_id = log_candidate_model(run, adapter, "smollm2")
    assert candidate_model_id(run.run_id) == model_id
    model = store.get_logged_model(model_id)
    assert (model.source_run_id, str(model.status)) == (run.run_id, "READY")
    assert model.params == {"base_model": "smollm2"}
    assert {m.key: (m.value, m.step) for m in model.metrics} == {"train.loss": (1.5, 2)}
    files = sorted(a.path for a in store.list_logged_model_artifacts(model_id))
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    stored = Path(urlparse(model.artifact_location).path) / "adapter_model.safetensors"
    assert not stored.is_symlink() and stored.read_bytes() == b"weights"  # copied, not linked
    outputs = store.get_run(run.run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [model_id]

    mv = MlflowRegistry().register("linked", adapter, run.run_id, None,
                                   {"base_model": "smollm2"})
    assert store.get_model_version("linked", mv.registry_id).run_id == run.run_id
    linked = json.loads(store.get_logged_model(model_id).tags["mlflow.modelVersions"])
    assert linked == [{"name": "linked", "version": mv.registry_id}]


def test_a_stage_is_a_nested_run_that_ends_with_its_outcome(store: Any, tmp_path: Path) -> None:
    run, _ = a_run(store, "staged", tmp_path)
    with stage_run(run, "train") as child_id:
        pass
    with pytest.raises(RuntimeError), stage_run(run, "evaluate") as failed_id:
        raise RuntimeError("boom")
    for child, status, stage in ((child_id, "FINISHED", "train"),
                                 (failed_id, "FAILED", "evaluate")):
        got = store.get_run(child)
        assert got.data.tags["mlflow.parentRunId"] == run.run_id
        assert (got.info.status, got.data.tags["llmops.stage"]) == (status, stage)
        assert "seconds" in got.data.metrics
