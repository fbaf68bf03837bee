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


def test_accuracies_show_their_sample_size_interval_and_noise(tmp_path: Path) -> None:
    from llmops.evaluation.uncertainty import question_verdicts, summarize

    answers = ([{"role": "candidate", "golden_set": "golden", "question": f"q{i}",
                 "correct": i < 22} for i in range(28)]
               + [{"role": "production", "golden_set": "golden", "question": f"q{i}",
                   "correct": i < 20} for i in range(28)]
               + [{"role": "base", "golden_set": "golden", "question": f"q{i}",
                   "correct": i < 1} for i in range(28)])
    verdicts = question_verdicts(answers)
    rules = [GateRule(metric="golden_accuracy", min_gain_over_production_lower_bound=-0.1),
             GateRule(metric="eval_loss", max=3.0)]
    metrics = {"base": {"golden_accuracy": 1 / 28, "eval_loss": 3.0},
               "production": {"golden_accuracy": 20 / 28, "eval_loss": 1.0},
               "candidate": {"golden_accuracy": 22 / 28, "eval_loss": 1.5}}
    decision = gate_decision(rules, metrics["candidate"], metrics["base"],
                             metrics["production"], verdicts)
    assert decision.passed  # 22 vs 20 of 28, 2 won and 0 lost: lower bound -0.052
    json_path, md_path, html_path = write(tmp_path, "bot", rules, decision, metrics, {},
                                          summarize(verdicts))
    md = md_path.read_text()
    assert ("| golden_accuracy | 0.036 (1/28, 95% CI 0.006–0.177) | "
            "0.714 (20/28, 95% CI 0.529–0.847) | 0.786 (22/28, 95% CI 0.605–0.898) | "
            "gain over production, 95% lower bound >= -0.1 | ✅ |") in md
    assert "| eval_loss | 3 | 1 | 1.5 | <= 3 | ✅ |" in md  # no verdicts: the plain value
    assert ("- golden_accuracy, candidate − production: +0.071 (95% CI -0.052 to +0.200; "
            "28 paired questions, 2 better, 0 worse) — within noise") in md
    assert "- golden_accuracy, candidate − base: +0.750" in md
    assert "within noise" not in md.split("candidate − base: ")[1].splitlines()[0]
    assert "golden.golden.accuracy" not in md  # one golden set: its accuracy is the overall
    unc = json.loads(json_path.read_text())["uncertainty"]
    assert unc["accuracy"]["candidate"]["golden_accuracy"]["successes"] == 22
    assert unc["differences"]["candidate-production"]["golden_accuracy"]["within_noise"]
    html = html_path.read_text()
    assert "0.786 (22/28, 95% CI 0.605–0.898)" in html and "within noise" in html


def test_each_golden_set_is_listed_when_there_are_several() -> None:
    from llmops.evaluation.gatereport import uncertainty_lines
    from llmops.evaluation.uncertainty import question_verdicts, summarize

    answers = [{"role": role, "golden_set": s, "question": "q", "correct": role == "candidate"}
               for role in ("base", "candidate") for s in ("faq", "pricing")]
    text = "\n".join(uncertainty_lines(summarize(question_verdicts(answers))))
    assert "| golden_accuracy | 0.000 (0/2, 95% CI 0.000–0.658) | 1.000 (2/2" in text
    assert "| golden.faq.accuracy |" in text and "golden.pricing.accuracy, candidate − base" in text
    assert uncertainty_lines(None) == []


def test_the_suites_sections_reach_every_format(tmp_path: Path) -> None:
    rules = [GateRule(metric="retention_kept", min=0.9)]
    metrics = {"base": {"retention_kept": 1.0}, "candidate": {"retention_kept": 0.5}}
    decision = gate_decision(rules, metrics["candidate"], metrics["base"], None)
    section = ("Kept capabilities (retention set)", ["- candidate: kept 1/2 (50.0%)",
                                                     "| k-1 | <b>What</b> |"])
    json_path, md_path, html_path = write(tmp_path, "bot", rules, decision, metrics, {},
                                          sections=[section])
    assert json.loads(json_path.read_text())["sections"] == [
        {"title": section[0], "lines": section[1]}]
    assert "### Kept capabilities (retention set)" in md_path.read_text()
    html = html_path.read_text()
    assert "<h2>Kept capabilities (retention set)</h2>" in html
    assert "kept 1/2 (50.0%)" in html and "&lt;b&gt;What&lt;/b&gt;" in html
