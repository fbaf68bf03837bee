"""The gate report: the evidence a promotion merge request carries (Markdown and JSON), and
the same as a self-contained HTML page that needs no network to read."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from llmops.config import GateRule
from llmops.data.htmlreport import badge, page
from llmops.evaluation.gates import GateDecision


def threshold_text(rule: GateRule) -> str:
    """A rule's conditions in words, e.g. '>= 0.5; gain over base >= 0.3'."""
    parts = []
    if rule.min is not None:
        parts.append(f">= {rule.min:g}")
    if rule.max is not None:
        parts.append(f"<= {rule.max:g}")
    if rule.min_gain_over_base is not None:
        parts.append(f"gain over base >= {rule.min_gain_over_base:g}")
    if rule.max_regression_vs_production is not None:
        parts.append(f"regression vs production <= {rule.max_regression_vs_production:g}")
    return "; ".join(parts)


def _value(metrics: Mapping[str, float] | None, name: str) -> float | None:
    value = None if metrics is None else metrics.get(name)
    return None if value is None or not math.isfinite(value) else float(value)


def gate_rows(rules: list[GateRule], decision: GateDecision,
              metrics: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """One row per rule: metric, base, production, candidate, threshold, pass, reason."""
    return [
        {"metric": rule.metric,
         "base": _value(metrics.get("base"), rule.metric),
         "production": _value(metrics.get("production"), rule.metric),
         "candidate": _value(metrics.get("candidate"), rule.metric),
         "threshold": threshold_text(rule), "passed": result.passed, "reason": result.reason}
        for rule, result in zip(rules, decision.results, strict=True)
    ]


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def render_markdown(model: str, rows: list[dict[str, Any]], passed: bool,
                    links: Mapping[str, str]) -> str:
    lines = [f"## Gate report: {model} — {'PASSED' if passed else 'FAILED'}", "",
             "| metric | base | production | candidate | threshold | pass |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['metric']} | {_cell(r['base'])} | {_cell(r['production'])} | "
                     f"{_cell(r['candidate'])} | {r['threshold']} | "
                     f"{'✅' if r['passed'] else '❌'} |")
    lines += ["", "Reasons:"] + [f"- {r['reason']}" for r in rows]
    if links:
        lines += [""] + [f"- {k}: {v}" for k, v in links.items()]
    return "\n".join(lines) + "\n"


def render_html(model: str, rows: list[dict[str, Any]], passed: bool,
                links: Mapping[str, str]) -> str:
    """The Markdown report's content as one HTML page with its stylesheet inline."""
    verdict = "PASSED" if passed else "FAILED"
    table = "\n".join(
        f"<tr class=\"{'pass' if r['passed'] else 'fail'}\"><td>{escape(r['metric'])}</td>"
        f"<td>{_cell(r['base'])}</td><td>{_cell(r['production'])}</td>"
        f"<td>{_cell(r['candidate'])}</td><td>{escape(r['threshold'])}</td>"
        f"<td>{badge(r['passed'])}</td><td>{escape(r['reason'])}</td></tr>" for r in rows)
    body = [f"<h1>Gate report: {escape(model)} — {verdict} {badge(passed)}</h1>",
            "<p class=\"meta\">The release gate of validation/"
            f"{escape(model)}.yml: every rule must pass for the candidate to be registered."
            "</p>",
            "<table>\n<thead><tr><th>metric</th><th>base</th><th>production</th>"
            "<th>candidate</th><th>threshold</th><th>status</th><th>reason</th></tr>"
            f"</thead>\n<tbody>\n{table}\n</tbody>\n</table>"]
    if links:
        body.append("<ul>" + "".join(f"<li>{escape(k)}: <code>{escape(v)}</code></li>"
                                     for k, v in links.items()) + "</ul>")
    return page(f"Gate report: {model} ({verdict})", "\n".join(body))


def write(folder: Path, model: str, rules: list[GateRule], decision: GateDecision,
          metrics: Mapping[str, Mapping[str, float]], links: Mapping[str, str]) -> \
        tuple[Path, Path, Path]:
    """gate_report.json, gate_report.md and gate_report.html in `folder`."""
    rows = gate_rows(rules, decision, metrics)
    json_path, md_path = folder / "gate_report.json", folder / "gate_report.md"
    html_path = folder / "gate_report.html"
    json_path.write_text(json.dumps({"model": model, "passed": decision.passed, "rules": rows,
                                     "metrics": metrics, "links": dict(links)}, indent=2))
    md_path.write_text(render_markdown(model, rows, decision.passed, links))
    html_path.write_text(render_html(model, rows, decision.passed, links), encoding="utf-8")
    return json_path, md_path, html_path
