"""A flow publishes the data report and the gate report as Prefect artifacts, refusals
included, against Prefect's own test server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.artifacts import (
    artifact_key,
    publish_data_report,
    publish_gate_report,
    published_refusals,
)
from llmops.config import GateRule
from llmops.data import CheckResult, DataReport, DatasetReport
from llmops.errors import DataRefused, GateRefused
from llmops.evaluation import gatereport
from llmops.evaluation.gates import gate_decision


def test_artifact_keys_are_what_prefect_accepts() -> None:
    assert artifact_key("gate-report", "Support_Bot.v2") == "gate-report-support-bot-v2"
    assert artifact_key("data-report", "--") == "data-report"


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import logging

    from prefect.testing.utilities import prefect_test_harness

    # Prefect configures logging for the process when a flow runs; its console handlers
    # would outlive this module, bound to a stream pytest has closed by then.
    loggers = [logging.root, *(lg for lg in logging.Logger.manager.loggerDict.values()
                               if isinstance(lg, logging.Logger))]
    before = {id(lg): (list(lg.handlers), lg.level, lg.propagate) for lg in loggers}
    try:
        with prefect_test_harness(server_startup_timeout=60):
            yield
    finally:
        for lg in [logging.root, *(lg for lg in logging.Logger.manager.loggerDict.values()
                                   if isinstance(lg, logging.Logger))]:
            handlers, level, propagate = before.get(id(lg), ([], logging.NOTSET, True))
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate


def _artifacts(key: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def _report(tmp_path: Path) -> DataReport:
    checks = [CheckResult("parse", False, "1 failing", "valid JSON", [2]),
              CheckResult("size", True, "30 examples", ">= 20")]
    ds = DatasetReport(str(tmp_path / "train.jsonl"), "train", "ab" * 32, 30, 4, 8, 9, checks)
    return DataReport("art-bot", [ds], str(tmp_path / "data_report.json"),
                      str(tmp_path / "index.html"), 0.1, str(tmp_path / "data_report.html"))


def _gate_files(tmp_path: Path) -> Path:
    rules = [GateRule(metric="golden_accuracy", min=0.5)]
    metrics = {"base": {"golden_accuracy": 0.1}, "candidate": {"golden_accuracy": 0.2}}
    decision = gate_decision(rules, metrics["candidate"], metrics["base"], None)
    _, md, _ = gatereport.write(tmp_path, "art-bot", rules, decision, metrics, {})
    return md


def test_refusals_publish_their_reports_then_raise(prefect_api: None, tmp_path: Path) -> None:
    from prefect import flow

    report, gate_md = _report(tmp_path), _gate_files(tmp_path)

    @flow(name="refused-data")
    def refused_data() -> None:
        with published_refusals():
            raise DataRefused("data validation failed", report)

    @flow(name="refused-gate")
    def refused_gate() -> None:
        with published_refusals():
            raise GateRefused("the candidate failed its release gate", gate_md)

    with pytest.raises(DataRefused):
        refused_data()
    with pytest.raises(GateRefused):
        refused_gate()

    (data_md,) = _artifacts("data-report-art-bot")
    assert data_md.type == "markdown" and "FAILED" in data_md.data
    assert "| parse | ❌ | 1 failing | valid JSON | 2 |" in data_md.data
    assert data_md.flow_run_id is not None
    (checks,) = _artifacts("data-checks-art-bot")
    assert checks.type == "table" and "parse" in str(checks.data)
    (gate,) = _artifacts("gate-report-art-bot")
    assert "Gate report: art-bot — FAILED" in gate.data and "gate_report.html" in gate.data
    (rules,) = _artifacts("gate-rules-art-bot")
    assert rules.type == "table" and "golden_accuracy" in str(rules.data)


def test_a_passing_report_is_published_from_its_files(prefect_api: None,
                                                     tmp_path: Path) -> None:
    from prefect import flow

    report = _report(tmp_path)
    report.model, report.datasets[0].checks[0].passed = "ok-bot", True
    report.write_json(report.json_path)

    @flow(name="passed")
    def passed() -> None:
        publish_data_report(report.json_path)
        publish_gate_report(tmp_path / "missing" / "gate_report.json")  # logged, not raised

    passed()
    (data_md,) = _artifacts("data-report-ok-bot")
    assert "PASSED" in data_md.data and "data_report.html" in data_md.data
    assert not _artifacts("gate-report-ok-bot")
