"""The gate report: the evidence a promotion merge request carries (Markdown and JSON), and
the same as a self-contained HTML page that needs no network to read.

With the golden answers' verdicts (`uncertainty`), every accuracy shows its sample size and
95% Wilson interval, and the candidate's paired differences to production and base show
Newcombe's interval, marked "within noise" when it contains 0."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from llmops.config import GateRule
from llmops.data.htmlreport import badge, page
from llmops.evaluation.gates import GateDecision
from llmops.evaluation.served import ADAPTER_ROLE, DESCRIPTIONS, ROLES
from llmops.evaluation.uncertainty import Uncertainty


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
    if rule.min_gain_over_base_lower_bound is not None:
        parts.append(f"gain over base, 95% lower bound >= {rule.min_gain_over_base_lower_bound:g}")
    if rule.min_gain_over_production_lower_bound is not None:
        parts.append("gain over production, 95% lower bound >= "
                     f"{rule.min_gain_over_production_lower_bound:g}")
    return "; ".join(parts)


def _value(metrics: Mapping[str, float] | None, name: str) -> float | None:
    value = None if metrics is None else metrics.get(name)
    return None if value is None or not math.isfinite(value) else float(value)


def gate_rows(rules: list[GateRule], decision: GateDecision,
              metrics: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """One row per rule: metric, base, production, (candidate_adapter,) candidate,
    threshold, pass, reason. `candidate_adapter` (the adapter, beside a candidate served as
    merged or int8 weights) is shown, not gated."""
    return [
        {"metric": rule.metric,
         **{role: _value(metrics.get(role), rule.metric) for role in _roles(metrics)},
         "threshold": threshold_text(rule), "passed": result.passed, "reason": result.reason}
        for rule, result in zip(rules, decision.results, strict=True)
    ]


def _roles(metrics: Mapping[str, Any]) -> tuple[str, ...]:
    """The report's role columns: base, production and candidate always; the candidate's
    adapter beside the candidate when it was measured apart."""
    return _ROLES if ADAPTER_ROLE not in metrics else \
        ("base", "production", ADAPTER_ROLE, "candidate")


def _header(role: str, artefacts: Mapping[str, str]) -> str:
    """A role's column title: 'candidate (int8)' when the role's artefact is known."""
    return f"{role} ({artefacts[role]})" if role in artefacts else role


def subject_lines(artefacts: Mapping[str, str]) -> list[str]:
    """What the gate evaluated, when the candidate is not served as its adapter."""
    served = artefacts.get("candidate")
    if not served or served == "adapter":
        return []
    return ["", f"Gated: the candidate as its target serves it ({DESCRIPTIONS[served]}). "
            f"Beside it, not gated: {ADAPTER_ROLE} ({DESCRIPTIONS['adapter']}). Eval loss is "
            "the adapter's (transformers) for both."]


def _cell(value: float | None, uncertainty: Uncertainty | None = None, role: str = "",
          metric: str = "") -> str:
    """A value; an accuracy with verdicts as '0.786 (22/28, 95% CI 0.604–0.898)'."""
    share = None if uncertainty is None else uncertainty.accuracy.get(role, {}).get(metric)
    if share is not None and value is not None:
        return share.text()
    return "–" if value is None else f"{value:.4g}"


_ROLES: tuple[str, ...] = ("base", "production", "candidate")


def _shown(uncertainty: Uncertainty, roles: list[str]) -> list[str]:
    """The accuracy metrics to list: golden.<set>.accuracy only with more than one set (with
    one, it is golden_accuracy again)."""
    metrics = list(dict.fromkeys(m for r in roles for m in uncertainty.accuracy[r]))
    per_set = [m for m in metrics if m != "golden_accuracy"]
    return [m for m in metrics if len(per_set) > 1 or m not in per_set]


def _differences(uncertainty: Uncertainty) -> list[tuple[str, str, str]]:
    """(metric, 'candidate − production', text) of every difference to list."""
    shown = _shown(uncertainty, list(uncertainty.accuracy))
    return [(m, pair.replace("-", " − "), d.text())
            for pair, diffs in uncertainty.differences.items()
            for m, d in diffs.items() if m in shown]


def uncertainty_lines(uncertainty: Uncertainty | None) -> list[str]:
    """The Markdown section on intervals: every accuracy, then the paired differences."""
    if uncertainty is None or not uncertainty.accuracy:
        return []
    roles = [r for r in ROLES if r in uncertainty.accuracy]
    metrics = _shown(uncertainty, roles)
    lines = ["", "Accuracy with its sample size and 95% confidence interval (Wilson score):", "",
             "| metric | " + " | ".join(roles) + " |", "|---|" + "---|" * len(roles)]
    for m in metrics:
        cells = [(p.text() if (p := uncertainty.accuracy[r].get(m)) else "–") for r in roles]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if uncertainty.differences:
        lines += ["", "Differences on the same questions (Newcombe's paired score interval, "
                  "95%; within noise: the interval contains 0):", ""]
        lines += [f"- {m}, {pair}: {text}" for m, pair, text in _differences(uncertainty)]
    return lines


def render_markdown(model: str, rows: list[dict[str, Any]], passed: bool,
                    links: Mapping[str, str], uncertainty: Uncertainty | None = None,
                    sections: Sequence[tuple[str, list[str]]] = (),
                    artefacts: Mapping[str, str] | None = None) -> str:
    artefacts = artefacts or {}
    roles = _roles(rows[0] if rows else {})
    lines = [f"## Gate report: {model} — {'PASSED' if passed else 'FAILED'}", "",
             "| metric | " + " | ".join(_header(r, artefacts) for r in roles)
             + " | threshold | pass |", "|---|" + "---|" * (len(roles) + 2)]
    for r in rows:
        cells = [_cell(r[role], uncertainty, role, r["metric"]) for role in roles]
        lines.append(f"| {r['metric']} | {' | '.join(cells)} | {r['threshold']} | "
                     f"{'✅' if r['passed'] else '❌'} |")
    lines += subject_lines(artefacts)
    lines += ["", "Reasons:"] + [f"- {r['reason']}" for r in rows]
    lines += uncertainty_lines(uncertainty)
    for title, body in sections:  # the evaluation suites' own findings
        lines += ["", f"### {title}", "", *body]
    if links:
        lines += [""] + [f"- {k}: {v}" for k, v in links.items()]
    return "\n".join(lines) + "\n"


def render_html(model: str, rows: list[dict[str, Any]], passed: bool,
                links: Mapping[str, str], uncertainty: Uncertainty | None = None,
                artefacts: Mapping[str, str] | None = None,
                sections: Sequence[tuple[str, list[str]]] = ()) -> str:
    """The Markdown report's content as one HTML page with its stylesheet inline (the
    suites' sections as their Markdown text, escaped)."""
    verdict = "PASSED" if passed else "FAILED"
    artefacts = artefacts or {}
    roles = _roles(rows[0] if rows else {})
    table = "\n".join(
        f"<tr class=\"{'pass' if r['passed'] else 'fail'}\"><td>{escape(r['metric'])}</td>"
        + "".join(f"<td>{escape(_cell(r[role], uncertainty, role, r['metric']))}</td>"
                  for role in roles)
        + f"<td>{escape(r['threshold'])}</td>"
        f"<td>{badge(r['passed'])}</td><td>{escape(r['reason'])}</td></tr>" for r in rows)
    body = [f"<h1>Gate report: {escape(model)} — {verdict} {badge(passed)}</h1>",
            "<p class=\"meta\">The release gate of validation/"
            f"{escape(model)}.yml: every rule must pass for the candidate to be registered."
            "</p>",
            "<table>\n<thead><tr><th>metric</th>"
            + "".join(f"<th>{escape(_header(r, artefacts))}</th>" for r in roles)
            + "<th>threshold</th><th>status</th><th>reason</th></tr>"
            f"</thead>\n<tbody>\n{table}\n</tbody>\n</table>"]
    body += [f"<p class=\"meta\">{escape(line)}</p>" for line in subject_lines(artefacts)
             if line]
    body += _uncertainty_html(uncertainty)
    for title, lines in sections:  # the evaluation suites' own findings
        body += [f"<h2>{escape(title)}</h2>", f"<pre>{escape(chr(10).join(lines))}</pre>"]
    if links:
        body.append("<ul>" + "".join(f"<li>{escape(k)}: <code>{escape(v)}</code></li>"
                                     for k, v in links.items()) + "</ul>")
    return page(f"Gate report: {model} ({verdict})", "\n".join(body))


def _uncertainty_html(uncertainty: Uncertainty | None) -> list[str]:
    if uncertainty is None or not uncertainty.accuracy:
        return []
    roles = [r for r in ROLES if r in uncertainty.accuracy]
    metrics = _shown(uncertainty, roles)
    rows = "\n".join(
        f"<tr><td>{escape(m)}</td>" + "".join(
            f"<td>{escape(p.text() if (p := uncertainty.accuracy[r].get(m)) else '–')}</td>"
            for r in roles) + "</tr>" for m in metrics)
    out = ["<h2>Accuracy with 95% confidence intervals</h2>",
           "<p class=\"meta\">Sample size and Wilson score interval of every accuracy.</p>",
           "<table>\n<thead><tr><th>metric</th>"
           + "".join(f"<th>{r}</th>" for r in roles)
           + f"</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"]
    if uncertainty.differences:
        out.append("<h2>Differences on the same questions</h2>")
        out.append("<p class=\"meta\">Newcombe's paired score interval, 95%; within noise: "
                   "the interval contains 0.</p>")
        out.append("<ul>" + "".join(
            f"<li>{escape(m)}, {escape(pair)}: {escape(text)}</li>"
            for m, pair, text in _differences(uncertainty)) + "</ul>")
    return out


def write(folder: Path, model: str, rules: list[GateRule], decision: GateDecision,
          metrics: Mapping[str, Mapping[str, float]], links: Mapping[str, str],
          uncertainty: Uncertainty | None = None,
          sections: Sequence[tuple[str, list[str]]] = (),
          artefacts: Mapping[str, str] | None = None) -> tuple[Path, Path, Path]:
    """gate_report.json, gate_report.md and gate_report.html in `folder`; `uncertainty`
    (from the golden answers' verdicts) adds the intervals; `artefacts` (role → adapter,
    merged, int8) says what each role was served as."""
    rows = gate_rows(rules, decision, metrics)
    json_path, md_path = folder / "gate_report.json", folder / "gate_report.md"
    html_path = folder / "gate_report.html"
    body: dict[str, Any] = {"model": model, "passed": decision.passed, "rules": rows,
                            "metrics": metrics, "links": dict(links)}
    if uncertainty is not None:
        body["uncertainty"] = uncertainty.to_json()
    if artefacts:
        body["artefacts"] = dict(artefacts)
    if sections:
        body["sections"] = [{"title": t, "lines": b} for t, b in sections]
    json_path.write_text(json.dumps(body, indent=2))
    md_path.write_text(render_markdown(model, rows, decision.passed, links, uncertainty,
                                       sections, artefacts))
    html_path.write_text(render_html(model, rows, decision.passed, links, uncertainty,
                                     artefacts, sections), encoding="utf-8")
    return json_path, md_path, html_path
