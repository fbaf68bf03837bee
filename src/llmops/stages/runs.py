"""The MLflow run of a release: created once, named one way, always marked finished or failed."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.config import ModelSpec
from llmops.config.paths import run_folder
from llmops.redact import redact_mapping
from llmops.serve.cost import Compute
from llmops.tracking import MODEL_ID_TAG, experiment_id, tracking_uri


@dataclass(frozen=True)
class Run:
    """One release's MLflow run and its folder (CI passes the folder between jobs)."""

    model: str
    run_id: str
    name: str

    @property
    def folder(self) -> Path:
        return run_dir(self.model, self.run_id)


def mlflow_client() -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri())


def run_name(model: str, version: str | None = None) -> str:
    """`<model>-<version>` when the version is known up front, else `<model>-<timestamp>`."""
    return f"{model}-{version or time.strftime('%Y%m%d-%H%M%S')}"


def run_dir(model: str, run_id: str) -> Path:
    """Where a run's outputs and reports live."""
    folder = run_folder(model, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_run(spec: ModelSpec, name: str, tags: dict[str, str]) -> Run:
    """Create the release's MLflow run (exit 2 now if MLflow is unreachable)."""
    run = mlflow_client().create_run(experiment_id(spec.name), run_name=name,
                                     tags={**redact_mapping(tags), "llmops.model": spec.name})
    return Run(spec.name, str(run.info.run_id), name)


def finish_run(run: Run, ok: bool) -> None:
    mlflow_client().set_terminated(run.run_id, "FINISHED" if ok else "FAILED")


@contextmanager
def release_run(spec: ModelSpec, tags: dict[str, str], version: str | None = None,
                resume: Run | None = None) -> Iterator[Run]:
    """A new run tagged with `tags` (or `resume`, an unfinished one), marked FINISHED when
    the block completes and FAILED when it raises, interrupts included."""
    run = resume or start_run(spec, run_name(spec.name, version), tags)
    ok = False
    try:
        yield run
        ok = True
    finally:
        finish_run(run, ok)


@contextmanager
def stage_run(parent: Run, stage: str) -> Iterator[str]:
    """A nested MLflow run (MLflow's `mlflow.parentRunId` tag: the runs page lists it under
    `parent`) for one stage of the release: FINISHED or FAILED, with its `seconds`. Metrics
    and artifacts stay on the parent; the child shows which stage ran, how long, and how it
    ended. Yields the child's run id."""
    client = mlflow_client()
    started = time.time()
    child = client.create_run(
        client.get_run(parent.run_id).info.experiment_id,
        run_name=f"{parent.name or parent.run_id[:8]} {stage}",
        tags={"mlflow.parentRunId": parent.run_id, "llmops.stage": stage,
              "llmops.model": parent.model})
    ok = False
    try:
        yield str(child.info.run_id)
        ok = True
    finally:
        client.log_metric(child.info.run_id, "seconds", round(time.time() - started, 3))
        client.set_terminated(child.info.run_id, "FINISHED" if ok else "FAILED")


# What of a training folder is the candidate (the files a registered version ships).
MODEL_FILES = ("adapter_config.json", "adapter_model.safetensors")


def log_candidate_model(run: Run, adapter_dir: Path, base_model: str) -> str:
    """The run's adapter as an MLflow 3 logged model: linked to the run (its output, listed
    in the runs page's Models column), holding the adapter files and the run's latest
    metrics; its id is the run's `llmops.model_id` tag. Returns the model id."""
    from mlflow.entities import LoggedModelOutput, Metric

    client = mlflow_client()
    info = client.get_run(run.run_id)
    model = client.create_logged_model(
        info.info.experiment_id, name=run.model, source_run_id=run.run_id,
        params={"base_model": base_model}, tags={"llmops.model": run.model},
        model_type="peft-lora")
    model_id = str(model.model_id)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in MODEL_FILES:
                if (adapter_dir / name).is_file():
                    (Path(tmp) / name).symlink_to((adapter_dir / name).resolve())
            client.log_model_artifacts(model_id, tmp)
        client.log_outputs(run.run_id, [LoggedModelOutput(model_id, step=0)])
        latest = []
        for key in info.data.metrics:
            if key.startswith("system/"):
                continue
            history = client.get_metric_history(run.run_id, key)
            if history:
                last = max(history, key=lambda m: (m.step, m.timestamp))
                latest.append(Metric(key, last.value, last.timestamp, last.step,
                                     model_id=model_id, run_id=run.run_id))
        if latest:
            client.log_batch(run.run_id, metrics=latest)
        client.finalize_logged_model(model_id, "READY")
    except BaseException:
        client.finalize_logged_model(model_id, "FAILED")
        raise
    client.set_tag(run.run_id, MODEL_ID_TAG, model_id)
    return model_id


def candidate_model_id(run_id: str) -> str | None:
    """The logged model of a run's candidate (None for a run trained before they were
    logged)."""
    tags: Mapping[str, str] = mlflow_client().get_run(run_id).data.tags
    return tags.get(MODEL_ID_TAG)


# The run's compute, per stage (train, eval): read by registration into the version.
COST_FILE = "cost.json"


def read_compute(folder: Path) -> dict[str, Compute]:
    """The compute recorded in a run folder (or a registered package): stage -> Compute."""
    import json

    path = folder / COST_FILE
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    return {stage: Compute.from_dict(v) for stage, v in raw.items() if isinstance(v, dict)}


def log_compute(run: Run, stage: str, used: Compute) -> Compute:
    """Record what `stage` used: `cost.json` in the run folder (registration copies it into
    the version), the run's tags `cost.<stage>.*` and its metric `cost.<stage>_device_hours`."""
    import json

    folder = run.folder
    recorded = {k: v.as_dict() for k, v in read_compute(folder).items()}
    recorded[stage] = used.as_dict()
    (folder / COST_FILE).write_text(json.dumps(recorded, indent=2))
    client = mlflow_client()
    for key, value in used.tags(stage).items():
        client.set_tag(run.run_id, key, value)
    client.log_metric(run.run_id, f"cost.{stage}_device_hours", used.device_hours)
    return used


def log_params(run: Run, params: Mapping[str, str]) -> None:
    """Log `params` on the run (MLflow takes up to 100 a call)."""
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    client = mlflow_client()
    for i in range(0, len(items), 100):
        client.log_batch(run.run_id, params=items[i:i + 100])
