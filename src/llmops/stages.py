"""The release's stages as plain typed functions; flows/ and the CLI wrap these.

Each stage takes what the previous one produced and returns a typed result, raising
CheckFailed (exit 1) when the data or the candidate is refused and StageFailed when the
work itself broke. Every stage logs its evidence into the release's MLflow run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from llmops import gatereport, modelcard, rollout, serve
from llmops.basemodels import ensure_base_model
from llmops.config import DatasetRef, ModelSpec, load_pins
from llmops.data import DataReport, validate_model_data
from llmops.errors import CheckFailed, UsageError
from llmops.evaluate import EvalReport, evaluate
from llmops.gates import GateDecision, gate_decision
from llmops.paths import state_subdir
from llmops.promote import registry_backend
from llmops.registry import ModelVersion
from llmops.tracking import experiment_id, git_tags, tracking_uri
from llmops.train import TrainResult, choose_backend, train
from llmops.trainconfig import check_training_config


def _client() -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri())


def start_release_run(spec: ModelSpec, run_name: str) -> str:
    """Create the release's MLflow run (exit 2 now if MLflow is unreachable)."""
    exp = experiment_id(spec.name)
    run = _client().create_run(exp, run_name=run_name,
                               tags={**git_tags(), "llmops.model": spec.name})
    return str(run.info.run_id)


def finish_run(run_id: str, ok: bool) -> None:
    _client().set_terminated(run_id, "FINISHED" if ok else "FAILED")


def check_data(spec: ModelSpec, only: list[DatasetRef] | None = None) -> DataReport:
    """The data gate's verdict and reports (JSON, Data Docs); raises nothing on a failure."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ensure_base_model(spec.base_model))
    return validate_model_data(spec, tokenizer, only)


def record_data(spec: ModelSpec, run_id: str, report: DataReport) -> None:
    """Log the data report (written from `report`, which may come from the cache), the
    Data Docs and the dataset inputs (sha256) to the release run."""
    path = run_dir(spec, run_id) / "data_report.json"
    report.write_json(path)
    client = _client()
    client.log_artifact(run_id, str(path), "data")
    docs = Path(report.docs_path).parent
    if docs.is_dir():
        client.log_artifacts(run_id, str(docs), "data/docs")
    _log_inputs(run_id, report)


def require_data(report: DataReport) -> DataReport:
    """The report if the data passed; CheckFailed listing each failed check and lines."""
    if not report.passed:
        lines = [
            f"  {Path(ds.path).name}: {c.check}: {c.observed} (want {c.threshold})"
            + (f"; lines {', '.join(map(str, c.lines))}" if c.lines else "")
            for ds in report.datasets for c in ds.checks if not c.passed
        ]
        failed = CheckFailed("data validation failed:\n" + "\n".join(lines)
                             + f"\nreport: {report.json_path}\ndata docs: {report.docs_path}")
        failed.report = report  # type: ignore[attr-defined]  # for the CLI's table
        raise failed
    return report


def validate_stage(spec: ModelSpec, run_id: str | None = None,
                   only: list[DatasetRef] | None = None) -> DataReport:
    """The data gate; CheckFailed lists every failed check with its first lines."""
    report = check_data(spec, only)
    if run_id:
        record_data(spec, run_id, report)
    return require_data(report)


def _log_inputs(run_id: str, report: DataReport) -> None:
    """Record each dataset as an MLflow input with its sha256 digest."""
    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag

    # MLflow caps a dataset digest at 36 characters: the full sha256 is in source and a tag.
    inputs = [
        DatasetInput(
            Dataset(name=Path(ds.path).name, digest=ds.sha256[:32], source_type="local",
                    source=json.dumps({"uri": ds.path, "sha256": ds.sha256})),
            [InputTag("mlflow.data.context", ds.split)])
        for ds in report.datasets
    ]
    client = mlflow.MlflowClient(tracking_uri())
    client.log_inputs(run_id, datasets=inputs)
    for ds in report.datasets:
        client.set_tag(run_id, f"data.{ds.split}.sha256", ds.sha256)


def check_config(spec: ModelSpec) -> None:
    """The Axolotl YAML through Axolotl's config model and our rules (seconds, no model)."""
    check_training_config(spec.axolotl, spec.axolotl_path)


def train_stage(spec: ModelSpec, run_id: str, run_name: str, backend: str = "auto",
                resume_from: Path | None = None) -> TrainResult:
    """Axolotl (or Unsloth on one CUDA GPU) into the run; optionally from a checkpoint."""
    return train(spec, run_id, run_name, choose_backend(backend), resume_from)


def production_adapter(spec: ModelSpec) -> Path | None:
    """The adapter of the version pinned in registry/production.yml, fetched and verified."""
    pin = load_pins("production").models.get(spec.name)
    if pin is None:
        return None
    registry = registry_backend()
    mv = registry.get(spec.name, pin.version)
    if mv.digest != pin.digest:
        raise CheckFailed(f"registry/production.yml pins {spec.name} {pin.version} with digest "
                          f"{pin.digest}, but the registry has {mv.digest}")
    return registry.download(mv, state_subdir("eval") / spec.name / f"production-{mv.version}")


def evaluate_stage(spec: ModelSpec, run_id: str, base_model: str,
                   adapter_dir: Path) -> EvalReport:
    """Base, candidate (and production, when pinned) on the same inputs; logged to the run
    as `base.<m>`, `candidate.<m>`, `production.<m>`."""
    adapters = {"candidate": adapter_dir}
    if (prod := production_adapter(spec)) is not None:
        adapters["production"] = prod
    report = evaluate(spec, base_model, adapters)
    client = _client()
    now = int(time.time() * 1000)
    for role, metrics in report.metrics.items():
        for name, value in metrics.items():
            client.log_metric(run_id, f"{role}.{name}", value, timestamp=now)
    path = run_dir(spec, run_id) / "eval_report.json"
    path.write_text(json.dumps(asdict(report), indent=2))
    client.log_artifact(run_id, str(path), "eval")
    return report


def resolve_candidate(spec: ModelSpec, candidate: str) -> tuple[str, str, Path]:
    """(run id, base model, adapter folder) of a run id or a registered SemVer version."""
    from llmops.registry import SEMVER

    if SEMVER.match(candidate.removeprefix("v")):
        registry = registry_backend()
        mv = registry.get(spec.name, candidate.removeprefix("v"))
        folder = registry.download(mv, state_subdir("eval") / spec.name / mv.version)
        return mv.run_id, ensure_base_model(mv.base_model or spec.base_model), folder
    folder = state_subdir("runs") / spec.name / candidate
    if not (folder / "adapter_config.json").is_file():
        raise UsageError(f"candidate {candidate!r}: no such run (no adapter in {folder}) and "
                         "not a registered version")
    resolved = yaml.safe_load((folder / "axolotl.resolved.yml").read_text())
    return candidate, str(resolved["base_model"]), folder


def gate_stage(spec: ModelSpec, report: EvalReport, run_id: str) -> GateDecision:
    """Apply validation/<model>.yml's gates; CheckFailed (nothing registered) on failure."""
    decision = gate_decision(spec.validation.gates, report.metrics["candidate"],
                             base=report.metrics["base"],
                             production=report.metrics.get("production"))
    client = _client()
    client.set_tag(run_id, "gate.passed", str(decision.passed).lower())
    folder = run_dir(spec, run_id)
    links = {"MLflow run": f"{tracking_uri()} run {run_id}"}
    for path in gatereport.write(folder, spec.name, spec.validation.gates, decision,
                                 report.metrics, links):
        client.log_artifact(run_id, str(path), "gate")
    if not decision.passed:
        reasons = "\n".join(f"  {r.reason}" for r in decision.failures())
        raise CheckFailed(f"the candidate failed its release gate:\n{reasons}")
    return decision


def run_dir(spec: ModelSpec, run_id: str) -> Path:
    """Where a run's outputs and reports live (CI passes it between jobs as an artifact)."""
    folder = state_subdir("runs") / spec.name / run_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise UsageError(f"{path}: no {what}; run the earlier stages of this run first")
    return json.loads(path.read_text())


def build_package(spec: ModelSpec, run_id: str) -> tuple[Path, dict[str, str]]:
    """The folder to register (adapter, config, reports, model card) and its lineage."""
    folder_in = run_dir(spec, run_id)
    gate = _read_json(folder_in / "gate_report.json", "gate report")
    if not gate.get("passed"):
        raise CheckFailed(f"run {run_id} did not pass its release gate: nothing to register")
    evals = _read_json(folder_in / "eval_report.json", "evaluation report")
    data = _read_json(folder_in / "data_report.json", "data report")
    resolved = yaml.safe_load((folder_in / "axolotl.resolved.yml").read_text())
    folder = folder_in / "package"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(folder_in / name, folder / name)
    if (folder_in / "merged" / "config.json").is_file():  # merge_lora: true in the YAML
        shutil.copytree(folder_in / "merged", folder / "merged")
    shutil.copy2(folder_in / "axolotl.resolved.yml", folder / "axolotl.yml")
    for name in ("gate_report.json", "gate_report.md", "data_report.json", "eval_report.json"):
        shutil.copy2(folder_in / name, folder / name)
    lineage = {
        "run_id": run_id,
        "base_model": str(resolved["base_model"]),
        "data_sha256": ",".join(d["sha256"] for d in data["datasets"] if d["split"] == "train"),
        "gate.passed": "true",
        **git_tags(),
    }
    (folder / "README.md").write_text(
        modelcard.render(spec, data, evals["metrics"], gate, lineage))
    return folder, lineage


def default_version() -> str | None:
    """The CI tag's SemVer (v1.4.0 → 1.4.0) in a tag pipeline; None (next patch) otherwise."""
    tag = os.environ.get("CI_COMMIT_TAG")
    return tag.removeprefix("v") if tag else None


def register_stage(spec: ModelSpec, run_id: str, version: str | None) -> ModelVersion:
    """Register the run's adapter with its card, config, reports and sha256 manifest."""
    folder, lineage = build_package(spec, run_id)
    return registry_backend().register(spec.name, folder, run_id,
                                       version or default_version(), lineage)


def deploy_stage(spec: ModelSpec, mv: ModelVersion, env: str) -> serve.Deployment:
    """Fetch the version, check its manifest, start its server; the previous one keeps
    serving until the new one is verified (a failure here rolls back)."""
    return rollout.start_version(spec, mv, env)


def verify_stage(spec: ModelSpec, dep: serve.Deployment) -> rollout.Verification:
    """Smoke and load test the new server; switch to it, or stop it and roll back."""
    return rollout.verify_and_switch(spec, dep)
