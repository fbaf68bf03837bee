"""Evaluation and the release gate for a trained run or a registered version."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.tasks import PrefectSteps
from llmops.config import load_model
from llmops.stages.context import Context
from llmops.stages.evaluation import evaluate_candidate


@flow(name="evaluate", flow_run_name="{model}-{candidate}", log_prints=True)
def evaluate(model: str, candidate: str) -> dict[str, Any]:
    """Base vs candidate (vs production); raises when the gate refuses the candidate."""
    report, gate = evaluate_candidate(load_model(model), candidate, Context().registry,
                                      PrefectSteps())
    return {"metrics": report.metrics, "gate_report": str(gate)}
