"""The data report as one self-contained HTML page (and as Markdown, for Prefect's UI).

Great Expectations' Data Docs load Bootstrap, jQuery and their fonts from public CDNs, so
they render unstyled where there is no internet. This page carries its stylesheet inline
and refers to nothing outside itself: it reads the same in a browser on an air-gapped
machine, as an MLflow artifact or attached to a merge request. `page` is the shell the
gate report uses too.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from llmops.data.report import CheckResult, DataReport, DatasetReport

CSS = """
:root { color-scheme: light dark; --fg: #1f2328; --bg: #ffffff; --muted: #59636e;
  --line: #d1d9e0; --head: #f6f8fa; --pass: #1a7f37; --fail: #cf222e; --failbg: #ffebe9; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --bg: #0d1117; --muted: #9198a1; --line: #3d444d;
    --head: #151b23; --pass: #3fb950; --fail: #f85149; --failbg: #3c1618; } }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); margin: 2rem auto; max-width: 72rem;
  padding: 0 1rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .25rem; }
p.meta, p.note { color: var(--muted); margin: .25rem 0; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: .75rem 0; }
th, td { border: 1px solid var(--line); padding: .35rem .6rem; text-align: left;
  vertical-align: top; }
th { background: var(--head); }
tr.fail td { background: var(--failbg); }
.badge { display: inline-block; padding: .1rem .55rem; border-radius: 1rem; color: #fff;
  font-weight: 600; font-size: .8rem; letter-spacing: .03em; }
.badge.pass { background: var(--pass); }
.badge.fail { background: var(--fail); }
"""


def page(title: str, body: str) -> str:
    """A complete HTML document: `body` (already escaped HTML) under an inline stylesheet."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


def badge(passed: bool) -> str:
    return (f"<span class=\"badge {'pass' if passed else 'fail'}\">"
            f"{'PASS' if passed else 'FAIL'}</span>")


def _lines(check: CheckResult) -> str:
    return ", ".join(map(str, check.lines))


def _dataset_html(ds: DatasetReport) -> str:
    rows = "\n".join(
        f"<tr class=\"{'pass' if c.passed else 'fail'}\"><td>{escape(c.check)}</td>"
        f"<td>{badge(c.passed)}</td><td>{escape(c.observed)}</td>"
        f"<td>{escape(c.threshold)}</td><td>{escape(_lines(c))}</td></tr>"
        for c in ds.checks)
    return (f"<h2>{escape(Path(ds.path).name)} ({escape(ds.split)}) {badge(ds.passed)}</h2>\n"
            f"<p class=\"meta\">{ds.examples} examples; tokens p50 {ds.token_p50}, "
            f"p95 {ds.token_p95}, max {ds.token_max}; sha256 <code>{escape(ds.sha256)}</code>"
            f"<br><code>{escape(ds.path)}</code></p>\n"
            "<table>\n<thead><tr><th>check</th><th>status</th><th>observed</th>"
            "<th>threshold</th><th>first offending lines</th></tr></thead>\n"
            f"<tbody>\n{rows}\n</tbody>\n</table>")


def render_html(report: DataReport) -> str:
    """Every dataset's checks: status, observed value, threshold, first offending lines."""
    verdict = "PASSED" if report.passed else "FAILED"
    body = [f"<h1>Data report: {escape(report.model)} {badge(report.passed)}</h1>",
            f"<p class=\"meta\">{len(report.datasets)} dataset(s), validated in "
            f"{report.seconds:.1f} s. Line numbers count from 1 in the dataset file.</p>"]
    body += [_dataset_html(ds) for ds in report.datasets]
    body.append(f"<p class=\"note\">JSON: <code>{escape(report.json_path)}</code><br>"
                f"Great Expectations Data Docs (styled only with internet access): "
                f"<code>{escape(report.docs_path)}</code></p>")
    return page(f"Data report: {report.model} ({verdict})", "\n".join(body))


def render_markdown(report: DataReport) -> str:
    """The same content as Markdown (a Prefect artifact, a merge request comment)."""
    out = [f"## Data report: {report.model} — {'PASSED' if report.passed else 'FAILED'}"]
    for ds in report.datasets:
        out += ["", f"### {Path(ds.path).name} ({ds.split}) — "
                    f"{'pass' if ds.passed else 'FAIL'}",
                f"{ds.examples} examples; tokens p50 {ds.token_p50}, p95 {ds.token_p95}, "
                f"max {ds.token_max}; sha256 `{ds.sha256[:16]}…`", "",
                "| check | status | observed | threshold | first offending lines |",
                "|---|---|---|---|---|"]
        out += [f"| {c.check} | {'✅' if c.passed else '❌'} | {_md(c.observed)} | "
                f"{_md(c.threshold)} | {_lines(c)} |" for c in ds.checks]
    return "\n".join(out) + "\n"


def table_rows(report: DataReport) -> list[dict[str, Any]]:
    """One row per dataset and check (a Prefect table artifact)."""
    return [{"dataset": Path(ds.path).name, "split": ds.split, "check": c.check,
             "passed": c.passed, "observed": c.observed, "threshold": c.threshold,
             "lines": _lines(c)}
            for ds in report.datasets for c in ds.checks]


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_html(report: DataReport, path: str | Path) -> Path:
    out = Path(path)
    out.write_text(render_html(report), encoding="utf-8")
    return out
