"""Evaluation and the release gate for a trained run or a registered version."""

from __future__ import annotations

from typing import Any

from flows.artifacts import publish_gate_report, published_refusals
from flows.redaction import flow
from flows.tasks import PrefectSteps
from llmops.config import load_model
from llmops.stages.context import Context
from llmops.stages.evaluation import evaluate_candidate


@flow(name="evaluate", flow_run_name="{model}-{candidate}", log_prints=True)
def evaluate(model: str, candidate: str, env: str = "local") -> dict[str, Any]:
    """Base vs candidate (vs production), the candidate as deploy/<env>.yml serves it;
    raises when the gate refuses the candidate."""
    with published_refusals():  # a refusal's gate report reaches the Prefect UI too
        report, gate = evaluate_candidate(load_model(model), candidate, Context().registry,
                                          PrefectSteps(), env)
    publish_gate_report(gate)
    return {"metrics": report.metrics, "gate_report": str(gate)}
