"""The release flow: validate → train → evaluate → gate → register → deploy → verify.

Thin wiring: every task (flows/tasks.py) calls one function of `llmops.stages`. Run it with
`llmops release <model>` (Prefect's ephemeral API by default, or the server in
PREFECT_API_URL), or through a deployment declared in prefect.yaml.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows import tasks
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
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, Prefect included
    work_seconds: dict[str, float] = field(default_factory=dict)  # inside the stage code
    data_report: str = ""
    data_docs: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    gate: list[dict[str, Any]] = field(default_factory=list)
    endpoint: str = ""
    served_name: str = ""
    smoke_answer: str = ""
    flow_started_at: float = 0.0  # epoch seconds when the flow body began
    load: dict[str, Any] = field(default_factory=dict)


def _run_name() -> str:
    params = flow_run.parameters
    return f"{params['model']}-{params.get('version') or 'next'}"


def _name_run(name: str) -> None:
    """Once the version is known (the next patch by default), name the flow run after it."""
    from prefect.client.orchestration import get_client

    if flow_run.id:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=name)


@flow(name="release", flow_run_name=_run_name, log_prints=True)
def release(model: str, env: str = "local", version: str | None = None,
            config_checked: bool = False) -> ReleaseSummary:
    """Release `model` to `env`; raises (and registers nothing) when a gate refuses it.
    `config_checked`: the caller (`llmops release`) has just checked the Axolotl YAML."""
    out = ReleaseSummary(model=model, env=env, flow_started_at=time.time())
    tasks.WORK_SECONDS.clear()
    spec: ModelSpec = load_model(model)
    if not config_checked:
        started = time.perf_counter()
        tasks.check_config(spec)  # before any run, data or model: a bad YAML costs seconds
        out.seconds["config"] = time.perf_counter() - started
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
        data = timed("validate", tasks.validate_data, spec, out.run_id)
        out.data_report, out.data_docs = data.json_path, data.docs_path
        trained = timed("train", tasks.train, spec, out.run_id, out.run_name)
        report = timed("evaluate", tasks.evaluate, spec, trained.run_id, trained.base_model,
                       trained.adapter_dir)
        out.metrics = report.metrics
        decision = timed("gate", tasks.gate, spec, report, out.run_id)
        out.gate = [{"passed": r.passed, "reason": r.reason} for r in decision.results]
        mv = timed("register", tasks.register, spec, out.run_id, version)
        out.version = mv.version
        _name_run(f"{model}-{mv.version}")
        dep = timed("deploy", tasks.deploy, spec, mv, env)
        checked = timed("verify", tasks.verify, spec, dep)
        out.endpoint, out.served_name = dep.url, dep.served_name
        smoke = checked.smoke
        out.smoke_answer = str(smoke.answers[0]["answer"]) if smoke.answers else ""
        out.load = checked.load or {}
        ok = True
        return out
    finally:
        out.work_seconds = dict(tasks.WORK_SECONDS)
        stages.finish_run(out.run_id, ok)
