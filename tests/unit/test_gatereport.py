"""The gate report shows every rule with base / production / candidate and its verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

from llmops.config import GateRule
from llmops.evaluation.gatereport import threshold_text, write
from llmops.evaluation.gates import gate_decision


def test_report_rows_columns_and_files(tmp_path: Path) -> None:
    rules = [GateRule(metric="golden_accuracy", min=0.5, min_gain_over_base=0.3),
             GateRule(metric="eval_loss", max_regression_vs_production=0.1)]
    metrics = {"base": {"golden_accuracy": 0.0, "eval_loss": 3.0},
               "production": {"golden_accuracy": 0.7, "eval_loss": 1.0},
               "candidate": {"golden_accuracy": 0.8, "eval_loss": 1.5}}
    decision = gate_decision(rules, metrics["candidate"], metrics["base"], metrics["production"])
    json_path, md_path, _ = write(tmp_path, "bot", rules, decision, metrics, {"run": "abc"})
    body = json.loads(json_path.read_text())
    assert body["passed"] is False
    assert [r["passed"] for r in body["rules"]] == [True, False]
    assert body["rules"][1] | {"reason": ""} == {
        "metric": "eval_loss", "base": 3.0, "production": 1.0, "candidate": 1.5,
        "threshold": "regression vs production <= 0.1", "passed": False, "reason": ""}
    md = md_path.read_text()
    assert "FAILED" in md
    assert "| eval_loss | 3 | 1 | 1.5 | regression vs production <= 0.1 | ❌ |" in md


def test_missing_values_show_as_dashes(tmp_path: Path) -> None:
    rules = [GateRule(metric="golden_accuracy", min=0.5)]
    metrics = {"base": {}, "candidate": {"golden_accuracy": math.nan}}
    decision = gate_decision(rules, metrics["candidate"], metrics["base"], None)
    _, md, _ = write(tmp_path, "bot", rules, decision, metrics, {})
    assert "| golden_accuracy | – | – | – | >= 0.5 | ❌ |" in md.read_text()


def test_threshold_text() -> None:
    assert threshold_text(GateRule(metric="m", min=1, max=2)) == ">= 1; <= 2"
