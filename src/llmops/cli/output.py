"""What the CLI prints: tables and one-line results, from the engine's typed results."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
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


VERBOSE = False  # -v/--verbose: the CLI sets it


class StageLines:
    """The `Steps` reporter of the CLI: a spinner while a step runs (a line as it starts with
    -v or where standard error is no terminal, e.g. a CI log), and a line as it ends (its
    time and key number) or fails."""

    def __init__(self, out: Console | None = None,
                 on_start: Callable[[], None] | None = None) -> None:
        self.out = out or console
        self._on_start = on_start
        self._spinners: dict[str, Any] = {}

    def on_start(self, name: str) -> None:
        if self._on_start is not None:  # the CLI moves newly added log handlers off the terminal
            self._on_start()
        from llmops.process.activity import activity

        spinner = activity(f"▶ {name}")  # a spinner; a line with -v or in a CI log
        spinner.__enter__()
        self._spinners[name] = spinner

    def _stop(self, name: str) -> None:
        if (spinner := self._spinners.pop(name, None)) is not None:
            spinner.__exit__(None, None, None)

    def on_end(self, name: str, seconds: float, result: Any) -> None:
        self._stop(name)
        summary = key_number(name, result)
        self.out.print(f"[green]✓[/] {escape(name):<13}{seconds:8.1f} s"
                       + (f"  {escape(summary)}" if summary else ""), highlight=False)

    def on_fail(self, name: str, seconds: float, exc: BaseException) -> None:
        self._stop(name)
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        self.out.print(f"[bold red]✗[/] {escape(name):<13}{seconds:8.1f} s  {what} "
                       "(reason below)", highlight=False)


def key_number(name: str, result: Any) -> str:
    """The one number worth a glance from a step's result: examples checked, final loss,
    golden accuracy, gate verdict, version, URL ('' when the result has none)."""
    if result is None:
        return ""
    if hasattr(result, "datasets") and hasattr(result, "passed"):  # a DataReport
        examples = sum(getattr(ds, "examples", 0) for ds in result.datasets)
        return (f"{examples} examples checked, "
                + ("all checks passed" if result.passed else "checks failed"))
    if hasattr(result, "adapter_dir") and isinstance(getattr(result, "metrics", None), dict):
        m = result.metrics  # a TrainResult
        loss = m.get("train_loss", m.get("loss"))
        parts = [f"final loss {loss:.4g}" if isinstance(loss, int | float) else ""]
        if isinstance(m.get("eval_loss"), int | float):
            parts.append(f"eval loss {m['eval_loss']:.4g}")
        return ", ".join(p for p in parts if p)
    if hasattr(result, "results") and hasattr(result, "passed"):  # a GateDecision
        return f"{'passed' if result.passed else 'refused'} ({len(result.results)} rules)"
    if isinstance(getattr(result, "metrics", None), dict):  # an EvalReport
        acc = {role: m["golden_accuracy"] for role, m in result.metrics.items()
               if isinstance(m, dict) and "golden_accuracy" in m}
        return ("golden accuracy " + ", ".join(f"{r} {a:.0%}" for r, a in acc.items())
                if acc else "")
    if hasattr(result, "check") and hasattr(result, "endpoint"):  # Verified
        smoke, load = result.check.smoke, result.check.load
        text = f"{result.endpoint.url}: {smoke.right}/{len(smoke.answers)} golden right"
        if load:
            text += (f"; load test {load['concurrency']} clients, {load['errors']} errors, "
                     f"{load['tokens_per_s']} tok/s")
        return text
    if hasattr(result, "url") and hasattr(result, "version"):  # a started endpoint
        return f"{result.version} at {result.url}"
    if hasattr(result, "version") and hasattr(result, "digest"):  # a registered version
        return f"version {result.version} (digest {str(result.digest)[:19]})"
    return ""


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
    table.add_row("data docs", f"{s.data_docs} (styled with internet access only)")
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


def print_data_report(report: DataReport, verbose: bool | None = None) -> None:
    """The data gate's table (check, status, observed, threshold, first offending lines) when
    it refused the data or with -v; one line otherwise."""
    if not (VERBOSE if verbose is None else verbose) and report.passed:
        examples = sum(ds.examples for ds in report.datasets)
        print(f"data gate: {report.model}: {examples} examples checked in "
              f"{len(report.datasets)} dataset(s), all checks passed; report: "
              f"{report.json_path}")
        return
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
    print(f"report: {report.html_path or report.json_path}\njson: {report.json_path}\n"
          f"data docs: {report.docs_path}")


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
