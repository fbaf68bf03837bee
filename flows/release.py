"""The release flow: validate → train → evaluate → gate → register → deploy → verify.

Thin wiring: every task calls one function of `llmops.stages`. Run it with
`llmops release <model>` (Prefect's ephemeral API by default, or the server in
PREFECT_API_URL), or through a deployment declared in prefect.yaml.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.runtime import flow_run

from llmops import stages
from llmops.config import ModelSpec, load_model


@dataclass
class ReleaseSummary:
    """What a release produced, for the terminal summary and for callers."""

    model: str
    env: str
    run_id: str = ""
    run_name: str = ""
    version: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    data_report: str = ""
    data_docs: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    gate: list[dict[str, Any]] = field(default_factory=list)
    endpoint: str = ""
    served_name: str = ""
    smoke_answer: str = ""


def _task(name: str, fn: Any, timeout_s: float | None = None) -> Any:
    return task(fn, name=name, cache_policy=NO_CACHE, timeout_seconds=timeout_s)


validate = _task("validate", stages.validate_stage)
train = _task("train", stages.train_stage)
evaluate = _task("evaluate", stages.evaluate_stage)
gate = _task("gate", stages.gate_stage)
register = _task("register", stages.register_stage)
deploy = _task("deploy", stages.deploy_stage)
verify = _task("verify", stages.verify_stage)


def _run_name() -> str:
    params = flow_run.parameters
    return f"{params['model']}-{params.get('version') or 'next'}"


@flow(name="release", flow_run_name=_run_name, log_prints=True)
def release(model: str, env: str = "local", version: str | None = None) -> ReleaseSummary:
    """Release `model` to `env`; raises (and registers nothing) when a gate refuses it."""
    spec: ModelSpec = load_model(model)
    out = ReleaseSummary(model=model, env=env)
    out.run_name = f"{model}-{version or time.strftime('%Y%m%d-%H%M%S')}"
    out.run_id = stages.start_release_run(spec, out.run_name)

    def timed(stage: str, call: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            out.seconds[stage] = time.perf_counter() - started

    ok = False
    try:
        data = timed("validate", validate, spec, out.run_id)
        out.data_report, out.data_docs = data.json_path, data.docs_path
        trained = timed("train", train, spec, out.run_id, out.run_name)
        report = timed("evaluate", evaluate, spec, trained.run_id, trained.base_model,
                       trained.adapter_dir)
        out.metrics = report.metrics
        decision = timed("gate", gate, spec, report, out.run_id)
        out.gate = [{"passed": r.passed, "reason": r.reason} for r in decision.results]
        mv = timed("register", register, spec, out.run_id, version)
        out.version = mv.version
        dep = timed("deploy", deploy, spec, mv, env)
        smoke = timed("verify", verify, spec, dep, mv)
        out.endpoint, out.served_name = dep.url, dep.served_name
        out.smoke_answer = str(smoke.answers[0]["answer"]) if smoke.answers else ""
        ok = True
        return out
    finally:
        stages.finish_run(out.run_id, ok)
