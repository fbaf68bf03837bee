"""What the CLI prints: tables and one-line results, from the engine's typed results."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmops.cli.console import console
from llmops.config.paths import run_folder

if TYPE_CHECKING:
    from llmops.data import DataReport
    from llmops.stages.release import ReleaseSummary


def error(label: str, message: str) -> None:
    console.print(f"[bold red]{escape(label)}:[/] {escape(message)}", highlight=False)


def write_summary(s: ReleaseSummary, total: float, started: float) -> None:
    """release_summary.json in the run folder: times (where the time went), results."""
    work = sum(s.work_seconds.values())
    body = {**asdict(s), "total_s": total,
            "prefect_start_s": max(0.0, s.flow_started_at - started) if s.flow_started_at
            else None,
            "orchestration_s": total - work, "orchestration_share": (total - work) / total}
    path = run_folder(s.model, s.run_id) / "release_summary.json"
    if path.parent.is_dir():
        path.write_text(json.dumps(body, indent=2))


def print_summary(s: ReleaseSummary, total: float) -> None:
    from llmops.tracking import ui_hint

    table = Table(title=f"release {s.model} {s.version} → {s.env}", show_header=False)
    for stage, sec in s.seconds.items():
        table.add_row(f"{stage} time", f"{sec:.1f} s")
    table.add_row("total time", f"{total:.1f} s")
    work = sum(s.work_seconds.values())
    table.add_row("orchestration", f"{total - work:.1f} s ({(total - work) / total:.1%}): "
                  "total minus time inside the stages")
    table.add_row("data report", s.data_report)
    table.add_row("data docs", s.data_docs)
    table.add_row("MLflow run", f"{s.run_id} ({s.run_name})")
    table.add_row("MLflow UI", ui_hint())
    for role in ("base", "candidate"):
        m = s.metrics.get(role, {})
        table.add_row(f"{role} metrics", ", ".join(f"{k}={v:.4g}" for k, v in sorted(m.items())))
    table.add_row("gate", "passed: " + "; ".join(g["reason"] for g in s.gate))
    table.add_row("version", s.version)
    table.add_row("endpoint", s.endpoint)
    table.add_row("smoke answer", s.smoke_answer[:120])
    if s.load:
        table.add_row("load test", f"{s.load['requests']} requests, {s.load['concurrency']} "
                      f"clients, {s.load['errors']} errors, {s.load['tokens_per_s']} tok/s, "
                      f"p99 {s.load['p99_s']} s")
    Console().print(table)
    from llmops.serve.process import api_key_path

    key = f"$(cat {api_key_path()})" if s.endpoint.startswith("http://127.0.0.1") \
        else "$LLMOPS_API_KEY"
    print(
        f"\ncurl {s.endpoint}/chat/completions -H 'Content-Type: application/json' \\\n"
        f"  -H \"Authorization: Bearer {key}\" \\\n"
        f"  -d '{{\"model\": \"{s.served_name}\", \"messages\": [{{\"role\": \"user\", "
        f"\"content\": \"How long is the Quillbox free trial?\"}}], \"max_tokens\": 48}}'\n"
        f"stop it with: llmops stop {s.model} --env {s.env}"
    )


def print_data_report(report: DataReport) -> None:
    """The data gate's table: check, status, observed, threshold, first offending lines."""
    table = Table(title=f"data gate: {report.model}")
    for col in ("dataset", "check", "status", "observed", "threshold", "lines"):
        table.add_column(col, overflow="fold")
    for ds in report.datasets:
        for c in ds.checks:
            status = "[green]pass[/]" if c.passed else "[bold red]FAIL[/]"
            table.add_row(Path(ds.path).name, c.check, status, c.observed, c.threshold,
                          ", ".join(map(str, c.lines)))
    Console(width=max(Console().width, 140)).print(table)
    for ds in report.datasets:
        print(f"{Path(ds.path).name}: {ds.examples} examples, tokens p50 {ds.token_p50} "
              f"p95 {ds.token_p95} max {ds.token_max}, sha256 {ds.sha256[:16]}…")
    print(f"report: {report.json_path}\ndata docs: {report.docs_path}")


def print_verification(verified: Any, action: str = "deployed") -> None:
    dep, smoke, load = verified.endpoint, verified.check.smoke, verified.check.load
    print(f"{action} {dep.model} {dep.version} at {dep.url} (smoke: {len(smoke.answers)} "
          f"golden answer(s), {smoke.right} right; latency p50 "
          f"{statistics.median(smoke.latency_s):.2f} s)")
    if load:
        print(f"load test: {load['requests']} requests from {load['concurrency']} "
              f"clients, {load['errors']} errors, {load['tokens_per_s']} tokens/s, "
              f"latency p50 {load['p50_s']} s p99 {load['p99_s']} s, "
              f"TTFT p50 {load['ttft_p50_s']} s p99 {load['ttft_p99_s']} s")


def print_history(model: str, env: str, events: list[dict[str, Any]]) -> None:
    table = Table(title=f"deployments of {model} in {env}")
    for col in ("when", "action", "version", "result", "detail"):
        table.add_column(col)
    for e in events:
        detail = str(e.get("reason") or "")
        table.add_row(str(e["at"]), str(e["action"]), str(e["version"]), str(e["result"]),
                      detail if len(detail) < 120 else detail[:117] + "...")
    Console().print(table)


def print_status(records: list[Any]) -> None:
    table = Table(title="local deployments")
    for col in ("model", "env", "version", "endpoint", "pid", "state"):
        table.add_column(col)
    for d in records:
        table.add_row(d.model, d.env, d.version, d.url, str(d.pid),
                      "running" if d.alive() else "dead")
    Console().print(table)
