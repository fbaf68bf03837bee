"""The data report and the gate report as Prefect artifacts, so the Prefect UI shows why a
release passed or was refused: each as Markdown (the verdict, every check or rule) and as a
table (one row per check or rule).

Publishing is best effort: a Prefect API that cannot store an artifact is logged and never
hides the flow's own result or its refusal.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmops.data import DataReport
from llmops.data.htmlreport import render_markdown, table_rows
from llmops.errors import DataRefused, GateRefused

log = logging.getLogger(__name__)


def artifact_key(*parts: str) -> str:
    """A key Prefect accepts (lowercase letters, digits, dashes), e.g. 'gate-report-tiny'."""
    key = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    return re.sub(r"-{2,}", "-", key) or "report"


def publish_data_report(report: DataReport | str | Path) -> None:
    """The data gate's report (or its data_report.json): Markdown and a table of checks."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    try:
        data = report if isinstance(report, DataReport) else DataReport.read_json(report)
        verdict = "passed" if data.passed else "refused"
        where = data.html_path or data.json_path
        create_markdown_artifact(
            render_markdown(data) + f"\nReport (readable offline): `{where}`\n",
            key=artifact_key("data-report", data.model),
            description=f"data gate of {data.model}: {verdict}")
        create_table_artifact(table_rows(data), key=artifact_key("data-checks", data.model),
                              description=f"data gate of {data.model}: each check")
    except Exception as exc:  # an artifact must never hide the gate's own verdict
        log.warning("could not publish the data report as a Prefect artifact: %s", exc)


def publish_gate_report(path: str | Path) -> None:
    """The release gate's report (any of gate_report.md/.json/.html in one folder):
    its Markdown and a table of rules with base, production and candidate values."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    try:
        folder = Path(path).parent
        body = json.loads((folder / "gate_report.json").read_text())
        model, verdict = str(body["model"]), "passed" if body["passed"] else "refused"
        html = folder / "gate_report.html"
        markdown = (folder / "gate_report.md").read_text()
        if html.is_file():
            markdown += f"\nReport (readable offline): `{html}`\n"
        create_markdown_artifact(markdown, key=artifact_key("gate-report", model),
                                 description=f"release gate of {model}: {verdict}")
        create_table_artifact(body["rules"], key=artifact_key("gate-rules", model),
                              description=f"release gate of {model}: each rule")
    except Exception as exc:  # an artifact must never hide the gate's own verdict
        log.warning("could not publish the gate report as a Prefect artifact: %s", exc)


@contextmanager
def published_refusals() -> Iterator[None]:
    """Publish the report a refusal carries (DataRefused, GateRefused), then re-raise."""
    try:
        yield
    except DataRefused as exc:
        if isinstance(exc.report, DataReport):
            publish_data_report(exc.report)
        raise
    except GateRefused as exc:
        publish_gate_report(str(exc.report_path))
        raise
