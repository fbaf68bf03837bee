"""The whole release, composed once: check the config, validate the data, train, evaluate,
gate, register, deploy, verify. `llmops release` and the Prefect `release` flow both call
`release`; they differ only in the `Steps` runner (the flow runs each step as a task)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmops.compute import machine_plan
from llmops.config import ModelSpec
from llmops.process.activity import tell
from llmops.serve import handoff
from llmops.stages.context import Context
from llmops.stages.data import check_config, check_data, record_data, require_data
from llmops.stages.deployment import Target, deploy_version
from llmops.stages.evaluation import (
    CandidateRef,
    evaluate_stage,
    evaluation_settings,
    gate_stage,
)
from llmops.stages.registration import register_stage
from llmops.stages.runs import log_params, release_run, stage_run
from llmops.stages.steps import Steps
from llmops.stages.training import train_stage


@dataclass
class ReleaseSummary:
    """What a release produced, for the terminal summary and for callers."""

    model: str
    env: str
    run_id: str = ""
    run_name: str = ""
    version: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # per step, as called
    work_seconds: dict[str, float] = field(default_factory=dict)  # inside the stage code
    data_report: str = ""
    data_docs: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    gate: list[dict[str, Any]] = field(default_factory=list)
    endpoint: str = ""
    served_name: str = ""
    api_key_hint: str = ""  # where a client finds the endpoint's key (a shell expression)
    smoke_answer: str = ""
    flow_started_at: float = 0.0  # epoch seconds when the release began
    load: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)  # the machine's compute plan


def release(spec: ModelSpec, target: Target, ctx: Context, version: str | None = None,
            steps: Steps | None = None, config_checked: bool = False,
            on_version: Callable[[str], None] | None = None) -> ReleaseSummary:
    """Release `spec` to `target`; raises (and registers nothing) when a gate refuses it.
    `config_checked`: the caller has just checked the Axolotl YAML. `on_version` hears the
    registered version (a flow names its run after it)."""
    steps = steps or Steps()
    out = ReleaseSummary(model=spec.name, env=target.env, flow_started_at=time.time(),
                         api_key_hint=target.api_key_hint())
    # How this machine trains, evaluates and serves: one line first, then in the summary
    # and in the run's params.
    plan = machine_plan()
    tell(plan.line())
    out.plan = plan.summary()
    try:
        if not config_checked:  # before any run, data or model: a bad YAML costs seconds
            steps("check-config", check_config, spec)
        registry = ctx.registry
        with release_run(spec, ctx.run_tags, version) as run:
            out.run_id, out.run_name = run.run_id, run.name
            log_params(run, plan.params())

            def stage(name: str, fn: Callable[..., Any], *args: Any) -> Any:
                # Each stage is also a nested run of the release's (the MLflow UI lists
                # them under it, with their time and outcome); evidence stays on the parent.
                with stage_run(run, name):
                    return steps(name, fn, *args)

            report = stage("check-data", check_data, spec)
            stage("record-data", record_data, run, report)
            data = require_data(report)
            out.data_report, out.data_docs = data.html_path or data.json_path, data.docs_path
            trained = stage("train", train_stage, spec, run, "auto", False,
                            ctx.settings.quiet_train)
            candidate = CandidateRef(run, trained.base_model, trained.adapter_dir)
            # The gate's subject: the candidate as this target serves it (adapter, merged,
            # int8), with the adapter's figures beside it. Where the target can, the
            # server the gate judged is the one the deploy serves (`serve.handoff`).
            keep = target.takes_over(spec, evaluation_settings(spec))
            evaluated = stage("evaluate", evaluate_stage, spec, candidate, registry,
                              target.env, keep)
            out.metrics = evaluated.metrics
            decision = stage("gate", gate_stage, spec, evaluated, run)
            out.gate = [{"passed": r.passed, "reason": r.reason} for r in decision.results]
            mv = stage("register", register_stage, spec, run, version, ctx)
            out.version = mv.version
            if on_version is not None:
                on_version(mv.version)
            with stage_run(run, "deploy"):
                verified = deploy_version(spec, target, mv.version, registry, steps)
        out.endpoint, out.served_name = verified.endpoint.url, verified.endpoint.served_name
        smoke = verified.check.smoke
        out.smoke_answer = str(smoke.answers[0]["answer"]) if smoke.answers else ""
        out.load = verified.check.load or {}
        return out
    finally:
        handoff.discard(spec.name)  # a kept server no deploy took (a refusal, a failure)
        out.seconds, out.work_seconds = dict(steps.seconds), dict(steps.work_seconds)
