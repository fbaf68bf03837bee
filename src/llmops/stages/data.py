"""The checks that run before any compute: configuration, then the data gate."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmops.config import (
    DatasetRef,
    ModelSpec,
    known_envs,
    known_models,
    load_model,
    load_pins,
)
from llmops.config.paths import repo_root
from llmops.data import DataReport, validate_model_data
from llmops.data.changes import changed_files, models_touched
from llmops.data.htmlreport import write_html
from llmops.errors import CheckFailed, DataRefused, UsageError
from llmops.models.base import ensure_base_model, unreachable_base_model
from llmops.stages.deployment import check_deploy
from llmops.stages.runs import Run, mlflow_client
from llmops.train.trainconfig import check_training_config


def check_config(spec: ModelSpec) -> None:
    """The Axolotl YAML through Axolotl's config model and our rules, and the evaluation
    suites' files (probe set, retention set, lm-eval tasks) read as evaluation reads them,
    so that a missing or bad one stops the release before training (seconds, no model)."""
    from llmops.evaluation.suites import check_files

    check_training_config(spec.axolotl.as_dict(), spec.axolotl_path,
                          spec.validation.allow_trust_remote_code)
    check_files(spec)
    require_base_model(spec)


def require_base_model(spec: ModelSpec) -> None:
    """UsageError (exit 2) when the base model is a Hub id this machine cannot reach and
    has no copy of: one line naming the YAML and how to point at a local copy."""
    if problem := unreachable_base_model(spec.base_model):
        raise UsageError(f"{spec.axolotl_path}: base_model: {problem}")


@dataclass(frozen=True)
class ConfigCheck:
    label: str
    problem: str | None  # None: valid
    notes: tuple[str, ...] = ()  # said, not failed on (what only a deploy refuses)


def check_all_configs(models: list[str] | None = None) -> list[ConfigCheck]:
    """Every YAML the release reads (models, deploy targets, registry pins), each verdict."""
    checks: list[tuple[str, Callable[[], object]]] = [
        *((f"model {name}", lambda n=name: check_config(load_model(n)))
          for name in (models or known_models())),
        # Each target checks its own file (a Kubernetes target: the vLLM that evaluates).
        *((f"deploy/{env}.yml", lambda e=env: check_deploy(e)) for env in known_envs()),
        *((f"registry/{env}.yml", lambda e=env: load_pins(e))
          for env in known_envs("registry"))]
    results = []
    for label, check in checks:
        try:
            said = check()
        except UsageError as exc:
            results.append(ConfigCheck(label, str(exc)))
        else:
            notes = tuple(said) if isinstance(said, list) else ()
            results.append(ConfigCheck(label, None, notes))
    return results


def check_data(spec: ModelSpec, only: list[DatasetRef] | None = None) -> DataReport:
    """The data gate's verdict and reports (JSON, HTML, Data Docs); raises nothing on a
    failure."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ensure_base_model(spec.base_model))
    return validate_model_data(spec, tokenizer, only)


def record_data(run: Run, report: DataReport) -> None:
    """Log the data report (written from `report`, which may come from the cache) as JSON
    and as self-contained HTML (data/data_report.html, readable offline), the Data Docs and
    the dataset inputs (sha256) to the release run."""
    path = run.folder / "data_report.json"
    report.write_json(path)
    page = write_html(report, run.folder / "data_report.html")
    client = mlflow_client()
    client.log_artifact(run.run_id, str(path), "data")
    client.log_artifact(run.run_id, str(page), "data")
    docs = Path(report.docs_path).parent
    if docs.is_dir():
        client.log_artifacts(run.run_id, str(docs), "data/docs")
    _log_inputs(run.run_id, report)


def require_data(report: DataReport) -> DataReport:
    """The report if the data passed; DataRefused listing each failed check and lines."""
    if not report.passed:
        lines = [
            f"  {Path(ds.path).name}: {c.check}: {c.observed} (want {c.threshold})"
            + (f"; lines {', '.join(map(str, c.lines))}" if c.lines else "")
            for ds in report.datasets for c in ds.checks if not c.passed
        ]
        raise DataRefused("data validation failed:\n" + "\n".join(lines)
                          + f"\nreport: {report.html_path or report.json_path}"
                          + f"\njson: {report.json_path}\ndata docs: {report.docs_path}",
                          report)
    return report


def validate_data(spec: ModelSpec, run: Run | None = None,
                  only: list[DatasetRef] | None = None) -> DataReport:
    """The data gate; DataRefused lists every failed check with its first lines."""
    report = check_data(spec, only)
    if run is not None:
        record_data(run, report)
    return require_data(report)


def dataset_override(spec: ModelSpec, dataset: str) -> list[DatasetRef]:
    """`validate-data --dataset FILE`: that file, read like the model's first training set."""
    path = Path(dataset).resolve()
    if not path.is_file():
        raise UsageError(f"{dataset}: file not found")
    first = next(r for r in spec.datasets if r.split == "train")
    return [DatasetRef(path, first.type, "train", {**first.entry, "path": str(path)})]


@dataclass(frozen=True)
class ChangedModel:
    name: str
    files: list[str]  # relative to the repository
    report: DataReport | None  # None: the gate could not produce one
    refusal: str | None  # None: the data passed


def validate_changed(since: str) -> list[ChangedModel]:
    """The data gate for each model whose files differ from commit `since`."""
    root, out = repo_root(), []
    for name, files in models_touched(changed_files(since)).items():
        rel = [str(f.relative_to(root)) for f in files]
        try:
            out.append(ChangedModel(name, rel, validate_data(load_model(name)), None))
        except DataRefused as exc:
            out.append(ChangedModel(name, rel, exc.report, str(exc)))  # type: ignore[arg-type]
        except CheckFailed as exc:
            out.append(ChangedModel(name, rel, None, str(exc)))
    return out


def _log_inputs(run_id: str, report: DataReport) -> None:
    """Record each dataset as an MLflow input with its sha256 digest."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    # MLflow caps a dataset digest at 36 characters: the full sha256 is in source and a tag.
    inputs = [
        DatasetInput(
            Dataset(name=Path(ds.path).name, digest=ds.sha256[:32], source_type="local",
                    source=json.dumps({"uri": ds.path, "sha256": ds.sha256})),
            [InputTag("mlflow.data.context", ds.split)])
        for ds in report.datasets
    ]
    client = mlflow_client()
    client.log_inputs(run_id, datasets=inputs)
    for ds in report.datasets:
        client.set_tag(run_id, f"data.{ds.split}.sha256", ds.sha256)
