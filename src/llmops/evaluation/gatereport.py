"""The gate report: the evidence a promotion merge request carries (Markdown and JSON)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmops.config import GateRule
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


def write(folder: Path, model: str, rules: list[GateRule], decision: GateDecision,
          metrics: Mapping[str, Mapping[str, float]], links: Mapping[str, str]) -> \
        tuple[Path, Path]:
    """gate_report.json and gate_report.md in `folder`."""
    rows = gate_rows(rules, decision, metrics)
    json_path, md_path = folder / "gate_report.json", folder / "gate_report.md"
    json_path.write_text(json.dumps({"model": model, "passed": decision.passed, "rules": rows,
                                     "metrics": metrics, "links": dict(links)}, indent=2))
    md_path.write_text(render_markdown(model, rows, decision.passed, links))
    return json_path, md_path
