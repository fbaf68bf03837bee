"""The data gate alone: `validate(model)`; cached while its inputs do not change."""

from __future__ import annotations

from typing import Any

from flows.artifacts import publish_data_report
from flows.redaction import flow
from flows.tasks import PrefectSteps
from llmops.config import load_model
from llmops.stages.data import check_data, require_data


@flow(name="validate", flow_run_name="{model}-data", log_prints=True)
def validate(model: str) -> dict[str, Any]:
    """Validate every dataset of `model`; raises (exit 1 in the CLI) when a check fails."""
    report = PrefectSteps()("check-data", check_data, load_model(model))
    publish_data_report(report)  # passed or refused, the Prefect UI shows each check
    require_data(report)
    return {"passed": report.passed, "report": report.json_path, "html": report.html_path,
            "data_docs": report.docs_path}
