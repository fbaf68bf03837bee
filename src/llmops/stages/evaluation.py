"""Evaluating a candidate against the base model and production, then its release gate."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from llmops.compute import serve_settings
from llmops.config import ModelSpec, ServeSettings, load_deploy, load_pins
from llmops.config.paths import run_folder, state_subdir
from llmops.errors import CheckFailed, GateRefused, UsageError
from llmops.evaluation import gatereport
from llmops.evaluation.evaluate import EvalReport, evaluate
from llmops.evaluation.gates import GateDecision, gate_decision
from llmops.evaluation.records import log_evaluation_records
from llmops.evaluation.served import served_artefact
from llmops.evaluation.uncertainty import question_verdicts, summarize
from llmops.models.base import ensure_base_model
from llmops.redact import redact
from llmops.registry.base import SEMVER, Registry
from llmops.serve.cost import compute
from llmops.stages.runs import Run, candidate_model_id, log_compute, mlflow_client, run_dir
from llmops.stages.steps import Steps
from llmops.tracking import tracking_uri

# Evaluation serves on this machine's vLLM, with the local target's serving settings.
EVAL_ENV = "local"


@dataclass(frozen=True)
class CandidateRef:
    """What is evaluated: the run, its base model and its adapter folder."""

    run: Run
    base_model: str
    adapter_dir: Path


def production_adapter(spec: ModelSpec, registry: Registry) -> Path | None:
    """The adapter of the version pinned in registry/production.yml, fetched and verified."""
    pin = load_pins("production").models.get(spec.name)
    if pin is None:
        return None
    mv = registry.get(spec.name, pin.version)
    if mv.digest != pin.digest:
        raise CheckFailed(f"registry/production.yml pins {spec.name} {pin.version} with digest "
                          f"{pin.digest}, but the registry has {mv.digest}")
    return registry.download(mv, state_subdir("eval") / spec.name / f"production-{mv.version}")


def evaluation_settings(spec: ModelSpec) -> ServeSettings:
    """How evaluation serves `spec` here: the local target's settings, on this machine."""
    return serve_settings(load_deploy(EVAL_ENV), spec.name)


def evaluate_stage(spec: ModelSpec, candidate: CandidateRef, registry: Registry,
                   env: str = EVAL_ENV, keep_candidate: bool = False) -> EvalReport:
    """Base, candidate (and production, when pinned) on the same inputs; logged to the run
    as `base.<m>`, `candidate.<m>`, `production.<m>`, with golden_accuracy's 95% intervals
    (`<role>.golden_accuracy_ci_low`/`_high`, `candidate.golden_accuracy_vs_<ref>_ci_*`).

    The candidate and production are evaluated as `deploy/<env>.yml` serves them (the
    adapter, merged or int8 weights: `served_artefact`), on this machine's vLLM with the
    local target's settings; a candidate served as weights has its adapter's figures
    beside it as `candidate_adapter.<m>`; tags `eval.<role>.artefact` say which is which.
    `keep_candidate`: the candidate's own server stays up for the deploy that follows
    (`llmops.serve.handoff`; the release asks where its target can take it over)."""
    adapters = {"candidate": candidate.adapter_dir}
    if (prod := production_adapter(spec, registry)) is not None:
        adapters["production"] = prod
    settings = evaluation_settings(spec)
    artefact = served_artefact(load_deploy(env), spec.name)
    started = time.perf_counter()
    report = evaluate(spec, candidate.base_model, adapters, settings,
                      dict.fromkeys(adapters, artefact), keep_candidate)
    ended_at = time.time()  # when the golden requests' traces end (they last their latency)
    # Evaluation runs on this machine's CPU (transformers, vLLM's CPU server): one device.
    log_compute(candidate.run, "eval", compute(0, time.perf_counter() - started))
    run_id = candidate.run.run_id
    client = mlflow_client()
    now = int(time.time() * 1000)
    model_id = candidate_model_id(run_id)  # the candidate's metrics show on its model page
    for role, metrics in report.metrics.items():
        for name, value in metrics.items():
            client.log_metric(run_id, f"{role}.{name}", value, timestamp=now,
                              model_id=model_id if role == "candidate" else None)
    for role, metrics in summarize(question_verdicts(report.answers)).metrics().items():
        for name, value in metrics.items():  # the 95% intervals of golden_accuracy
            client.log_metric(run_id, f"{role}.{name}", value, timestamp=now,
                              model_id=model_id if role == "candidate" else None)
    for role, served in report.artefacts.items():
        client.set_tag(run_id, f"eval.{role}.artefact", served)
    client.set_tag(run_id, "eval.env", env)
    path = candidate.run.folder / "eval_report.json"
    path.write_text(json.dumps(asdict(report), indent=2))
    client.log_artifact(run_id, str(path), "eval")
    # Per question: the evaluation table and a trace per request, with its verdict (the
    # candidate's on its logged model); best effort, the gate decides on the report.
    log_evaluation_records(run_id, report.answers, report.suites, model_id=model_id,
                           match_rules={Path(g.path).stem: g.match
                                        for g in spec.validation.eval.golden},
                           ended_at=ended_at)
    return report


def resolve_candidate(spec: ModelSpec, candidate: str, registry: Registry) -> CandidateRef:
    """The run, base model and adapter of a run id or a registered SemVer version."""
    if SEMVER.match(candidate.removeprefix("v")):
        mv = registry.get(spec.name, candidate.removeprefix("v"))
        folder = registry.download(mv, state_subdir("eval") / spec.name / mv.version)
        return CandidateRef(Run(spec.name, mv.run_id, ""),
                            ensure_base_model(mv.base_model or spec.base_model), folder)
    folder = run_folder(spec.name, candidate)
    if not (folder / "adapter_config.json").is_file():
        raise UsageError(f"candidate {candidate!r}: no such run (no adapter in {folder}) and "
                         "not a registered version")
    resolved = yaml.safe_load((folder / "axolotl.resolved.yml").read_text())
    return CandidateRef(Run(spec.name, candidate, ""), str(resolved["base_model"]), folder)


def gate_stage(spec: ModelSpec, report: EvalReport, run: Run) -> GateDecision:
    """Apply validation/<model>.yml's gates; CheckFailed (nothing registered) on failure."""
    verdicts = question_verdicts(report.answers)
    decision = gate_decision(spec.validation.gates, report.metrics["candidate"],
                             base=report.metrics["base"],
                             production=report.metrics.get("production"), verdicts=verdicts)
    client = mlflow_client()
    client.set_tag(run.run_id, "gate.passed", str(decision.passed).lower())
    # The report reaches merge requests and release notes: the URI without credentials.
    links = {"MLflow run": f"{redact(tracking_uri())} run {run.run_id}"}
    for path in gatereport.write(run_dir(spec.name, run.run_id), spec.name,
                                 spec.validation.gates, decision, report.metrics, links,
                                 summarize(verdicts),
                                 [(s["name"], s["lines"]) for s in report.suites],
                                 artefacts=report.artefacts):
        client.log_artifact(run.run_id, str(path), "gate")
    if not decision.passed:
        reasons = "\n".join(f"  {r.reason}" for r in decision.failures())
        raise GateRefused(f"the candidate failed its release gate:\n{reasons}",
                          run.folder / "gate_report.md")
    return decision


def evaluate_candidate(spec: ModelSpec, candidate: str, registry: Registry,
                       steps: Steps | None = None, env: str = EVAL_ENV) -> \
        tuple[EvalReport, Path]:
    """Evaluate a run or a registered version as `deploy/<env>.yml` would serve it and
    apply the gate; (report, gate report). The gate report is written whatever the verdict;
    a refusal raises GateRefused."""
    steps = steps or Steps()
    ref = resolve_candidate(spec, candidate, registry)
    report = steps("evaluate", evaluate_stage, spec, ref, registry, env)
    steps("gate", gate_stage, spec, report, ref.run)
    return report, ref.run.folder / "gate_report.md"
