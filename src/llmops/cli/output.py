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
    from llmops.stages.doctor import DoctorReport
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
    if hasattr(result, "check_url") and hasattr(result, "version"):  # a started endpoint
        # Where it is verified: a local worker's own port, before it joins the router.
        return f"{result.version} started at {result.check_url}"
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
    for role in ("base", "candidate_adapter", "candidate"):
        if role == "candidate_adapter" and role not in s.metrics:
            continue
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
    print(
        f"\ncurl {s.endpoint}/chat/completions -H 'Content-Type: application/json' \\\n"
        f"  -H \"Authorization: Bearer {s.api_key_hint}\" \\\n"
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


def lineage_lines(r: Any) -> list[str]:
    """A `Lineage` (llmops.stages.lineage) as the lines `llmops lineage` prints."""
    from llmops.stages.lineage import serving_cost_line

    lines = [f"{r.model} {r.version}: {r.registry}, id {r.registry_id}, digest {r.digest}",
             f"  files: {r.source}",
             f"base model: {r.base_model}" + (f" ({r.base_pin})" if r.base_pin else ""),
             "datasets:"]
    lines += [f"  {d.split:<6}{d.path} ({d.examples} examples) sha256 {d.sha256}"
              for d in r.datasets] or ["  (no data report in the version)"]
    run = r.run
    if run.name:
        lines.append(f"training run: {run.run_id} ({run.name}, {run.status}, experiment "
                     f"{run.experiment}, {run.started} → {run.ended or '…'}, "
                     f"{run.params} axolotl.* params)")
    else:
        lines.append(f"training run: {run.run_id or '?'}" + (f" ({run.note})" if run.note
                                                               else ""))
    lines.append("  config: " + (" ".join(f"{k}={v}" for k, v in r.config.items()
                                          if k != "base_model") or "(not in the version)"))
    lines.append(f"git commit: {r.commit or 'unknown'}"
                 + (" (uncommitted changes)" if r.dirty == "true" else ""))
    ci = r.ci
    if ci:
        for key, label in (("CI_PIPELINE", "CI pipeline"), ("CI_JOB", "CI job")):
            url, ident = ci.get(f"{key}_URL"), ci.get(f"{key}_ID")
            if url or ident:
                lines.append(f"{label}: {url or ''}" + (f" (id {ident})" if ident else ""))
        if tag := ci.get("CI_COMMIT_TAG"):
            lines.append(f"CI tag: {tag}")
    else:
        lines.append("CI: not built in CI")
    lines.append(f"signed by: {r.signer or 'nobody (unsigned)'}")
    if p := r.provenance:
        lines.append(f"provenance: commit {p['commit']}, {p['pipeline']}, {p['datasets']} "
                     f"datasets, {p['locks']} locks, images {p['images']}, vLLM "
                     f"{p['engine']} (`llmops lineage --verify` checks it)")
    verdict = {True: "PASSED", False: "REFUSED", None: "unknown"}[r.gate_passed]
    lines.append(f"gate: {verdict} ({len(r.gate_rules)} rules)")
    lines += [f"  {'pass' if g.get('passed') else 'FAIL'}: {g.get('reason')}"
              for g in r.gate_rules]
    lines.append("compute (a device: one GPU, or one CPU machine):")
    for stage, label in (("train", "training"), ("eval", "evaluation")):
        c = r.compute.get(stage)
        lines.append(f"  {label:<11}" + (
            f"{float(c.get('device_hours', 0)):.4g} device-hours ({c.get('devices')} × "
            f"{c.get('device')}, {float(c.get('seconds', 0)):.1f} s)" if c else "not recorded"))
    lines.append("deployments:" if r.deployments else "deployments: none recorded")
    for e in r.deployments:
        cost = serving_cost_line(e)
        lines.append(f"  {e.env:<11}{e.at}  {e.action} {e.result}"
                     + (f"  {cost}" if cost else "") + (f"  ({e.detail})" if e.detail else ""))
    return lines


def verified_lines(v: Any) -> list[str]:
    """A `Verified` (llmops.stages.lineage.verify) as `llmops lineage --verify` prints it."""
    lines = [f"{v.model} {v.version}: files match the registered digest {v.digest}",
             "signature (model.sig), by each environment's signing.trust:"]
    for env, (ok, why) in sorted(v.signature.items()):
        word = {True: "accepted", False: "REFUSED", None: "unchecked"}[ok]
        lines.append(f"  {env:<11}{word}: {why}")
    lines.append("provenance (provenance.json):")
    for c in v.checks:
        word = {True: "ok", False: "DIFFERS", None: "unchecked"}[c.ok]
        lines.append(f"  {word:<10}{c.what}: {c.detail}")
    counts = [sum(1 for c in v.checks if c.ok is k) for k in (True, False, None)]
    lines.append(f"{counts[0]} digests match, {counts[1]} differ, {counts[2]} could not be "
                 "checked here" + ("; FAILED" if v.failed else ""))
    return lines


def print_verified(verified: Any) -> None:
    from llmops.redact import redact

    print(redact("\n".join(verified_lines(verified))))


def print_lineage(record: Any) -> None:
    from llmops.redact import redact

    print(redact("\n".join(lineage_lines(record))))


def print_status(records: list[Any]) -> None:
    table = Table(title="local deployments")
    for col in ("model", "env", "version", "endpoint", "pid", "state"):
        table.add_column(col)
    for d in records:
        table.add_row(d.model, d.env, d.version, d.url, str(d.pid),
                      "running" if d.alive() else "dead")
    Console().print(table)


def print_doctor(report: DoctorReport) -> None:
    """`llmops doctor`: the machine, its plan and why, then one line per check."""
    plan = report.plan
    device = ", ".join(plan.gpus) if plan.gpus else f"{plan.cpu_model}, {plan.cores} cores"
    console.print(f"machine: {escape(device)}; CPU ISA {plan.isa}", highlight=False)
    console.print(escape(plan.line()), highlight=False)
    for reason in plan.reasons:
        console.print(f"  {escape(reason)}", highlight=False)
    console.print("  override: dtype / quantization / kvcache_space_gib in deploy/<env>.yml, "
                  "bf16 / fp16 in the Axolotl YAML", highlight=False, style="dim")
    for check in report.checks:
        mark = {True: "[green]✓[/]", None: "[yellow]![/]", False: "[bold red]✗[/]"}[check.ok]
        console.print(f"{mark} {escape(check.name)}: {escape(check.detail)}", highlight=False)
