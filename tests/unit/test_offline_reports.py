"""The data report, the gate report and the model card read the same with the network off:
no stylesheet, script, font or image comes from anywhere but the file itself."""

from __future__ import annotations

import re
from pathlib import Path

from llmops.config import GateRule, load_model
from llmops.data import CheckResult, DataReport, DatasetReport
from llmops.data.htmlreport import render_html, render_markdown, table_rows, write_html
from llmops.evaluation.gatereport import write
from llmops.evaluation.gates import gate_decision
from llmops.registry import modelcard

# Anything a browser would fetch: <link href>, <script src>, <img src>, @import, url(...).
FETCHED = re.compile(
    r"<link\b[^>]*\bhref\s*=|<script\b[^>]*\bsrc\s*=|<(img|iframe|source|video|audio|embed"
    r"|object)\b|@import|url\(", re.IGNORECASE)
EXTERNAL = re.compile(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)


def assert_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert re.search(r"<style>[^<]*\bbody\s*\{[^<]*</style>", html), "no inline stylesheet"
    assert not FETCHED.search(html), FETCHED.search(html)
    # No address of any server outside text the reader sees (e.g. in an attribute).
    for attr in re.findall(r"\b(?:href|src|action|srcset)\s*=\s*\"([^\"]*)\"", html):
        assert not EXTERNAL.search(attr), attr


def data_report(tmp_path: Path) -> DataReport:
    checks = [CheckResult("parse", False, "1 failing (line 2: not JSON)", "valid JSON", [2]),
              CheckResult("no_pii", False, "1 failing (aws_key)", "no PII or secrets", [6]),
              CheckResult("unique", True, "0 failing", "no exact duplicates (<= 1.0% may fail)"),
              CheckResult("length", True, "0.0% over 512 tokens", "<= 0.0%"),
              CheckResult("size", True, "336 examples", ">= 20")]
    train = DatasetReport(str(tmp_path / "train.jsonl"), "train", "ab" * 32, 336, 40, 90, 120,
                          checks)
    evals = DatasetReport(str(tmp_path / "eval.jsonl"), "eval", "cd" * 32, 24, 40, 80, 100,
                          [CheckResult("size", True, "24 examples", ">= 20")])
    return DataReport("tiny", [train, evals], str(tmp_path / "data_report.json"),
                      str(tmp_path / "gx" / "index.html"), 1.5,
                      str(tmp_path / "data_report.html"))


def test_data_report_html_is_self_contained_and_complete(tmp_path: Path) -> None:
    report = data_report(tmp_path)
    html = write_html(report, report.html_path).read_text()
    assert_self_contained(html)
    for name in ("parse", "no_pii", "unique", "length", "size", "train.jsonl", "eval.jsonl"):
        assert f">{name}" in html
    assert "Data report: tiny" in html and "FAIL" in html
    parse_row = next(r for r in html.splitlines() if "<td>parse</td>" in r)
    assert 'class="fail"' in parse_row and "<td>2</td>" in parse_row and "valid JSON" in parse_row
    assert "1 failing (aws_key)" in html and "<td>6</td>" in html
    assert "p95 90" in html and "ab" * 32 in html


def test_data_report_html_escapes_what_the_data_says(tmp_path: Path) -> None:
    report = data_report(tmp_path)
    report.datasets[0].checks[0].observed = '1 failing (line 2: <script src="http://x.io/a.js">)'
    html = render_html(report)
    assert "<script" not in html and "&lt;script" in html
    assert_self_contained(html)


def test_data_report_markdown_table_and_json_round_trip(tmp_path: Path) -> None:
    report = data_report(tmp_path)
    md = render_markdown(report)
    assert "## Data report: tiny — FAILED" in md
    assert "| parse | ❌ | 1 failing (line 2: not JSON) | valid JSON | 2 |" in md
    rows = table_rows(report)
    assert len(rows) == 6 and rows[0] == {
        "dataset": "train.jsonl", "split": "train", "check": "parse", "passed": False,
        "observed": "1 failing (line 2: not JSON)", "threshold": "valid JSON", "lines": "2"}
    report.write_json(report.json_path)
    assert DataReport.read_json(report.json_path) == report


def test_gate_report_html_is_self_contained_with_every_rule(tmp_path: Path) -> None:
    rules = [GateRule(metric="golden_accuracy", min=0.5, min_gain_over_base=0.3),
             GateRule(metric="eval_loss", max_regression_vs_production=0.1)]
    metrics = {"base": {"golden_accuracy": 0.0, "eval_loss": 3.0},
               "production": {"golden_accuracy": 0.7, "eval_loss": 1.0},
               "candidate": {"golden_accuracy": 0.8, "eval_loss": 1.5}}
    decision = gate_decision(rules, metrics["candidate"], metrics["base"], metrics["production"])
    *_, html_path = write(tmp_path, "bot", rules, decision, metrics,
                          {"MLflow run": "http://127.0.0.1:5000 run abc"})
    assert html_path.name == "gate_report.html"
    html = html_path.read_text()
    assert_self_contained(html)
    assert "Gate report: bot — FAILED" in html
    loss = next(r for r in html.splitlines() if "<td>eval_loss</td>" in r)
    assert ('class="fail"' in loss and "<td>3</td><td>1</td><td>1.5</td>" in loss
            and "regression vs production &lt;= 0.1" in loss)
    for result in decision.results:
        assert result.reason.replace("<", "&lt;").replace(">", "&gt;") in html
    assert "<code>http://127.0.0.1:5000 run abc</code>" in html  # text, not a link


def test_model_card_has_no_images_or_fetched_links() -> None:
    spec = load_model("tiny")
    card = modelcard.render(
        spec, {"datasets": [{"path": "d/train.jsonl", "split": "train", "examples": 3,
                             "sha256": "ab" * 32}]},
        {"base": {"golden_accuracy": 0.1}, "candidate": {"golden_accuracy": 0.9}},
        {"rules": [{"passed": True, "reason": "golden_accuracy 0.9 >= 0.5"}]},
        {"run_id": "abc"})
    assert "](" not in card and "<img" not in card.lower() and "<link" not in card.lower()
    assert not EXTERNAL.search(card)


def test_the_check_rejects_what_data_docs_do() -> None:
    cdn = ('<!DOCTYPE html><style>body { margin: 0 }</style><link rel="stylesheet" '
           'href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>')
    for html in (cdn, cdn.replace("<link", "<x"), "<!DOCTYPE html><p>unstyled</p>"):
        try:
            assert_self_contained(html)
        except AssertionError:
            continue
        raise AssertionError(f"accepted: {html}")
