"""Evaluation and the release gate for a trained run or a registered version."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import tasks
from llmops import stages
from llmops.config import load_model


@flow(name="evaluate", flow_run_name="{model}-{candidate}", log_prints=True)
def evaluate(model: str, candidate: str) -> dict[str, Any]:
    """Base vs candidate (vs production); raises when the gate refuses the candidate."""
    spec = load_model(model)
    run_id, base, adapter = stages.resolve_candidate(spec, candidate)
    report = tasks.evaluate(spec, run_id, base, adapter)
    decision = tasks.gate(spec, report, run_id)
    return {"run_id": run_id, "metrics": report.metrics, "passed": decision.passed}
