"""The MLflow run of a release: created once, named one way, always marked finished or failed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.config import ModelSpec
from llmops.config.paths import run_folder
from llmops.redact import redact_mapping
from llmops.tracking import experiment_id, tracking_uri


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
