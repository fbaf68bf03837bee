"""`llmops`: one entry point, verb subcommands, exit codes CI can act on.

0 done; 1 a check or gate refused the data or the candidate, or a stage failed;
2 bad input (unknown model, missing file, malformed YAML, unreachable MLflow).
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmops.errors import LlmopsError
from llmops.paths import repo_root, state_dir, state_subdir
from llmops.prefect_api import start_local_api

console = Console(stderr=True, soft_wrap=True)

EPILOG = """examples:
  llmops release support-bot          # the whole release on CPU, embedded defaults
  llmops validate-data tiny           # the data gate alone
  llmops validate-data --changed-since origin/main   # the models a change touches
  llmops check-config                 # every YAML, in seconds, no model loaded
  llmops register tiny --run <id> --version 1.2.0
  llmops promote tiny 1.2.0 --to production          # opens a merge request
  llmops promote tiny 1.2.0 --to production --local  # edits registry/production.yml
  llmops status                       # local deployments
  llmops rollback support-bot         # serve the previous verified version again
  llmops history support-bot          # what was deployed, when, with which result
  llmops stop support-bot --env local # end one
"""


def _embedded_env() -> None:
    """Point Prefect and MLflow at `.llmops/` unless the environment says otherwise."""
    os.environ.setdefault("PREFECT_HOME", str(state_subdir("prefect")))
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH",
                          str(state_subdir("prefect-results")))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The first ephemeral start migrates a fresh database: 20-40 s on 2 cores (default 20).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{state_dir() / 'mlflow.db'}")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_flow(name: str) -> Any:
    """Import flows/<name>.py of the repository (flows/ is wiring, not package code)."""
    root = str(repo_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"flows.{name}")


def cmd_release(args: argparse.Namespace) -> int:
    from llmops.config import load_model

    spec = load_model(args.model)  # fail fast (exit 2) before Prefect starts
    started = time.time()
    api = start_local_api(Path(os.environ["PREFECT_HOME"]) / "api.log")
    # The Axolotl config check (seconds, mostly importing Axolotl) runs here while Prefect's
    # API comes up in its own process; a bad YAML exits 2 before any flow run exists.
    # Deployment runs of the flow check it themselves.
    from llmops.stages import check_config
    from llmops.tracking import experiment_id

    checked = time.perf_counter()
    check_config(spec)
    config_s = time.perf_counter() - checked
    release = load_flow("release").release
    # While Prefect's API finishes starting (a fresh home's database migrates for 10-15 s
    # more), open the model's MLflow experiment: a fresh home creates the store then (4 s),
    # and an unreachable MLflow exits 2 before any flow run exists.
    experiment_id(spec.name)
    if api is not None:
        api.wait_healthy()
    summary = release(model=args.model, env=args.env, version=args.version,
                      config_checked=True)
    summary.seconds = {"config": config_s, **summary.seconds}
    summary.work_seconds = {"check-config": config_s, **summary.work_seconds}
    total = time.time() - started
    print_summary(summary, total)
    write_summary(summary, total, started)
    return 0


def write_summary(s: Any, total: float, started: float) -> None:
    """release_summary.json in the run folder: times (where the time went), results."""
    import json
    from dataclasses import asdict

    work = sum(s.work_seconds.values())
    body = {**asdict(s), "total_s": total,
            "prefect_start_s": max(0.0, s.flow_started_at - started) if s.flow_started_at
            else None,
            "orchestration_s": total - work, "orchestration_share": (total - work) / total}
    path = state_subdir("runs") / s.model / s.run_id / "release_summary.json"
    if path.parent.is_dir():
        path.write_text(json.dumps(body, indent=2))


def print_summary(s: Any, total: float) -> None:
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
    print(
        f"\ncurl {s.endpoint}/chat/completions -H 'Content-Type: application/json' \\\n"
        f"  -d '{{\"model\": \"{s.served_name}\", \"messages\": [{{\"role\": \"user\", "
        f"\"content\": \"How long is the Quillbox free trial?\"}}], \"max_tokens\": 48}}'\n"
        f"stop it with: llmops stop {s.model} --env {s.env}"
    )


def cmd_validate_data(args: argparse.Namespace) -> int:
    from llmops.config import DatasetRef, load_model
    from llmops.errors import UsageError

    if args.changed_since:
        if args.model or args.dataset:
            raise UsageError("--changed-since picks the models itself: give no model or "
                             "--dataset with it")
        return validate_changed(args.changed_since)
    if not args.model:
        raise UsageError("validate-data needs a model (or --changed-since REF)")
    spec = load_model(args.model)
    only = None
    if args.dataset:
        path = Path(args.dataset).resolve()
        if not path.is_file():
            raise UsageError(f"{args.dataset}: file not found")
        first = next(r for r in spec.datasets if r.split == "train")
        only = [DatasetRef(path, first.type, "train", {**first.entry, "path": str(path)})]
    validate_and_print(spec, only)
    return 0


def validate_and_print(spec: Any, only: Any = None) -> None:
    """The data gate with its table, which is also printed when the gate refuses."""
    from llmops.errors import CheckFailed
    from llmops.stages import validate_stage

    try:
        report = validate_stage(spec, only=only)
    except CheckFailed as exc:
        failed = getattr(exc, "report", None)
        if failed is not None:
            print_data_report(failed)
        raise
    print_data_report(report)


def validate_changed(since: str) -> int:
    """The data gate for each model whose files differ from `since`; exit 1 if any fails."""
    from llmops.changes import changed_files, models_touched
    from llmops.config import load_model
    from llmops.errors import CheckFailed

    touched = models_touched(changed_files(since))
    if not touched:
        print(f"no model's datasets, golden sets, suite or training YAML changed since "
              f"{since}: nothing to validate")
        return 0
    refused, root = [], repo_root()
    for name, files in touched.items():
        print(f"{name}: changed {', '.join(str(f.relative_to(root)) for f in files)}")
        try:
            validate_and_print(load_model(name))
        except CheckFailed as exc:
            console.print(f"[bold red]{name}:[/] {escape(str(exc))}", highlight=False)
            refused.append(name)
    if refused:
        raise CheckFailed(f"the data gate refused {', '.join(refused)}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Every YAML the release reads, each problem reported (exit 2 if any)."""
    from llmops.config import known_envs, known_models, load_deploy, load_model, load_pins
    from llmops.errors import UsageError
    from llmops.stages import check_config

    checks: list[tuple[str, Any]] = [
        *((f"model {name}", lambda n=name: check_config(load_model(n)))
          for name in (args.models or known_models())),
        *((f"deploy/{env}.yml", lambda e=env: load_deploy(e)) for env in known_envs()),
        *((f"registry/{env}.yml", lambda e=env: load_pins(e))
          for env in known_envs("registry"))]
    bad = 0
    for label, check in checks:
        try:
            check()
        except UsageError as exc:
            bad += 1
            console.print(f"[bold red]{escape(label)}:[/] {escape(str(exc))}", highlight=False)
        else:
            print(f"{label}: ok")
    if bad:
        raise UsageError(f"{bad} of {len(checks)} configurations are invalid (above)")
    return 0


def print_data_report(report: Any) -> None:
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import evaluate_stage, gate_stage, resolve_candidate, run_dir

    spec = load_model(args.model)
    run_id, base, adapter = resolve_candidate(spec, args.candidate)
    report = evaluate_stage(spec, run_id, base, adapter)
    try:
        gate_stage(spec, report, run_id)
    finally:
        print((run_dir(spec, run_id) / "gate_report.md").read_text())
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import register_stage

    mv = register_stage(load_model(args.model), args.run, args.version)
    print(f"registered {mv.name} {mv.version} (registry id {mv.registry_id}) digest {mv.digest}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from llmops import promote

    registry = promote.registry_backend()
    if args.local:
        path = promote.promote_local(args.model, args.version, args.to, registry)
        print(f"pinned {args.model} {args.version} in {path}")
        return 0
    mv = promote.checked_version(registry, args.model, args.version)
    mr = promote.promote_mr(args.model, args.version, args.to, registry,
                            promote.gitlab_project(), promote.gate_evidence(registry, mv))
    print(f"merge request !{mr.iid}: {mr.web_url}")
    return 0


def cmd_apply_promotion(args: argparse.Namespace) -> int:
    from llmops import promote

    for mv in promote.apply_promotion(args.env, promote.registry_backend()):
        print(f"{args.env}: {mv.name} {mv.version} ({mv.digest})")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from llmops.config import load_deploy, load_model, load_pins
    from llmops.errors import UsageError
    from llmops.promote import registry_backend
    from llmops.stages import deploy_stage, verify_stage

    spec = load_model(args.model)
    pin = load_pins(args.env).models.get(args.model)
    version = args.version or (pin.version if pin else None)
    if version is None:
        raise UsageError(f"no --version given and registry/{args.env}.yml pins no {args.model}")
    if args.render:
        return render_manifests(spec, args.env, version, pin, Path(args.render))
    if load_deploy(args.env).target == "kubernetes":
        from llmops.kubectl import apply_manifests

        folder = state_subdir("manifests") / args.env
        render_manifests(spec, args.env, version, pin, folder)
        return apply_manifests(folder / f"{spec.name}-{args.env}.yaml", spec.name, args.env)
    mv = registry_backend().get(spec.name, version)
    dep = deploy_stage(spec, mv, args.env)
    print_verification(dep, verify_stage(spec, dep))
    return 0


def print_verification(dep: Any, check: Any) -> None:
    smoke, load = check.smoke, check.load
    print(f"deployed {dep.model} {dep.version} at {dep.url} (smoke: {len(smoke.answers)} "
          f"golden answer(s), {smoke.right} right; latency p50 "
          f"{statistics.median(smoke.latency_s):.2f} s)")
    if load:
        print(f"load test: {load['requests']} requests from {load['concurrency']} "
              f"clients, {load['errors']} errors, {load['tokens_per_s']} tokens/s, "
              f"latency p50 {load['p50_s']} s p99 {load['p99_s']} s, "
              f"TTFT p50 {load['ttft_p50_s']} s p99 {load['ttft_p99_s']} s")


def cmd_verify(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.rollout import verify_current

    dep, check = verify_current(load_model(args.model), args.env)
    print_verification(dep, check)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import (
        check_config,
        finish_run,
        start_release_run,
        train_stage,
        validate_stage,
    )
    from llmops.train import choose_backend, interrupted_run

    spec = load_model(args.model)
    backend = choose_backend(args.backend)
    check_config(spec)
    checkpoint = None
    if args.resume:  # the same MLflow run continues from its last checkpoint
        run_id, run_name, checkpoint = interrupted_run(spec)
    else:
        run_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_id = start_release_run(spec, run_name)
    print(f"MLflow run {run_id} ({run_name}), backend {backend}", flush=True)
    ok = False
    try:
        if checkpoint is None:
            validate_stage(spec, run_id)
        result = train_stage(spec, run_id, run_name, backend, checkpoint)
        ok = True
    finally:
        finish_run(run_id, ok)
    print(f"trained {spec.name}: adapter {result.adapter_dir}")
    if args.dotenv:  # for the next CI jobs (artifacts:reports:dotenv)
        Path(args.dotenv).write_text(f"LLMOPS_RUN_ID={run_id}\n")
    return 0


def cmd_release_notes(args: argparse.Namespace) -> int:
    """Files for a GitLab Release: notes.md (summary, gate report), the model card."""
    import shutil
    import tempfile

    from llmops.config import load_model
    from llmops.promote import registry_backend

    spec = load_model(args.model)
    registry = registry_backend()
    mv = registry.get(spec.name, args.version)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = registry.download(mv, Path(tmp) / "v")
        for name in ("README.md", "gate_report.md"):
            shutil.copy2(files / name, out / name)
    gate = (out / "gate_report.md").read_text()
    (out / "notes.md").write_text(
        f"## {spec.name} {mv.version}\n\nBase model `{mv.base_model}`, files digest "
        f"`{mv.digest}`, MLflow run `{mv.run_id}`.\n\n{gate}\n")
    print(f"release notes for {spec.name} {mv.version} in {out}/")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from llmops.config import load_deploy, load_model
    from llmops.rollout import rollback

    if load_deploy(args.env).target == "kubernetes":
        from llmops.kubectl import rollback_deployment

        return rollback_deployment(load_model(args.model).name, args.env)
    dep, check = rollback(load_model(args.model), args.env)
    print_verification(dep, check)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from llmops.serve import read_history

    table = Table(title=f"deployments of {args.model} in {args.env}")
    for col in ("when", "action", "version", "result", "detail"):
        table.add_column(col)
    for e in read_history(args.model, args.env)[-args.last:]:
        detail = str(e.get("reason") or "")
        table.add_row(str(e["at"]), str(e["action"]), str(e["version"]), str(e["result"]),
                      detail if len(detail) < 120 else detail[:117] + "...")
    Console().print(table)
    return 0


def render_manifests(spec: Any, env: str, version: str, pin: Any, out: Path) -> int:
    """`deploy --render DIR`: write the manifests; no cluster, no registry access."""
    import yaml

    from llmops.basemodels import ensure_base_model
    from llmops.config import load_deploy
    from llmops.errors import UsageError
    from llmops.manifests import Release, render
    from llmops.plan import ModelShape, plan_for

    deploy = load_deploy(env)
    if deploy.gpu is None:
        raise UsageError(f"deploy/{env}.yml is a {deploy.target} target: nothing to render")
    if pin is None or pin.version != version:
        from llmops.promote import registry_backend

        try:  # not pinned (a tag pipeline's staging deploy): the registry has its digest
            pin = registry_backend().get(spec.name, version)
        except LlmopsError as exc:
            raise UsageError(f"{spec.name} {version} is not pinned in registry/{env}.yml and "
                             f"the registry cannot say its digest: {exc}") from exc
    api = deploy.registry_api or (f"{os.environ['CI_API_V4_URL']}/projects/"
                                  f"{os.environ['CI_PROJECT_ID']}"
                                  if os.environ.get("CI_API_V4_URL") else None)
    if api is None:
        raise UsageError(f"deploy/{env}.yml: registry_api: not set (nor CI_API_V4_URL)")
    g = deploy.gpu
    result = plan_for(ModelShape.from_dir(Path(ensure_base_model(spec.base_model))), g)
    base = deploy.base_models.get(spec.name, spec.base_model)
    docs = render(Release(spec.name, version, pin.digest, base, api), env, g, result)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{spec.name}-{env}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    print(f"rendered {len(docs)} manifests to {path} ({result.explanation})")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from llmops.basemodels import ensure_base_model
    from llmops.config import load_deploy, load_model
    from llmops.errors import UsageError
    from llmops.plan import ModelShape, plan_for

    spec, deploy = load_model(args.model), load_deploy(args.env)
    if deploy.gpu is None:
        raise UsageError(f"deploy/{args.env}.yml is a {deploy.target} target with no gpu "
                         "section: nothing to plan")
    g = deploy.gpu
    shape = ModelShape.from_dir(Path(ensure_base_model(spec.base_model)))
    result = plan_for(shape, g)
    print(f"{args.model} on {args.env} ({g.nodes} × {g.gpus_per_node} × {g.gpu_type}, "
          f"{shape.params:,} parameters): {result.explanation}")
    return 0 if result.fits else 1


def cmd_status(args: argparse.Namespace) -> int:
    from llmops.serve import list_records

    table = Table(title="local deployments")
    for col in ("model", "env", "version", "endpoint", "pid", "state"):
        table.add_column(col)
    for d in list_records():
        table.add_row(d.model, d.env, d.version, d.url, str(d.pid),
                      "running" if d.alive() else "dead")
    Console().print(table)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from llmops.serve import stop

    dep = stop(args.model, args.env)
    console.print(f"stopped {dep.model} {dep.version} ({dep.url}, pid {dep.pid})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmops", description="Release fine-tuned LLMs: validate, train, gate, register, "
        "deploy.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    p = sub.add_parser("release", help="run the whole release flow for a model")
    p.add_argument("model")
    p.add_argument("--env", default="local", help="target environment (deploy/<env>.yml)")
    p.add_argument("--version", help="SemVer to register (default: next patch)")
    p.set_defaults(func=cmd_release)
    p = sub.add_parser("validate-data", help="run the data gate on a model's datasets")
    p.add_argument("model", nargs="?", help="the model (or use --changed-since)")
    p.add_argument("--dataset", help="check this file instead, against the model's rules")
    p.add_argument("--changed-since", metavar="REF",
                   help="every model whose datasets, golden sets, suite or training YAML "
                        "differ from commit REF (a merge request's base)")
    p.set_defaults(func=cmd_validate_data)
    p = sub.add_parser("check-config", help="check the YAMLs: models (ours and Axolotl's "
                       "config model), deploy targets, registry pins; no model is loaded")
    p.add_argument("models", nargs="*", help="these models only (default: all)")
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("evaluate", help="measure base, candidate and production; apply the gate")
    p.add_argument("model")
    p.add_argument("--candidate", required=True, help="a run id or a registered version")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("register", help="register a gated run's adapter as a new version")
    p.add_argument("model")
    p.add_argument("--run", required=True, help="MLflow run id of the release")
    p.add_argument("--version", help="SemVer (default: the CI tag, else the next patch)")
    p.set_defaults(func=cmd_register)
    p = sub.add_parser("promote", help="pin a version to an environment by merge request")
    p.add_argument("model")
    p.add_argument("version")
    p.add_argument("--to", required=True, metavar="ENV", help="environment (registry/<env>.yml)")
    p.add_argument("--local", action="store_true", help="edit the pin file, no GitLab")
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("apply-promotion", help="after merge: check pins, point env aliases")
    p.add_argument("--env", required=True)
    p.set_defaults(func=cmd_apply_promotion)
    p = sub.add_parser("deploy", help="serve a registered version (default: the pinned one)")
    p.add_argument("model")
    p.add_argument("--env", default="local")
    p.add_argument("--version", help="SemVer (default: the pin in registry/<env>.yml)")
    p.add_argument("--render", metavar="DIR", help="write Kubernetes manifests, apply nothing")
    p.set_defaults(func=cmd_deploy)
    p = sub.add_parser("train", help="data gate, then fine-tune into a new MLflow run")
    p.add_argument("model")
    p.add_argument("--backend", choices=("auto", "axolotl", "unsloth"), default="auto",
                   help="auto: unsloth on one CUDA GPU with unsloth installed, else axolotl")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest unfinished run from its last checkpoint")
    p.add_argument("--dotenv", metavar="FILE", help="write LLMOPS_RUN_ID=<run id> here")
    p.set_defaults(func=cmd_train)
    model_env(sub, "verify", "smoke + load test a model's serving deployment", cmd_verify)
    p = sub.add_parser("release-notes", help="notes, model card and gate report of a version")
    p.add_argument("model")
    p.add_argument("--version", required=True)
    p.add_argument("--out", default="release", help="folder to write (default: release/)")
    p.set_defaults(func=cmd_release_notes)
    model_env(sub, "rollback", "serve the previous verified version again", cmd_rollback)
    p = model_env(sub, "history", "what was deployed where, when, and how it went",
                  cmd_history)
    p.add_argument("--last", type=int, default=20, help="show the last N events")
    p = sub.add_parser("plan", help="explain the tensor/pipeline parallel plan for a target")
    p.add_argument("model")
    p.add_argument("--env", required=True)
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("status", help="list local deployments")
    p.set_defaults(func=cmd_status)
    model_env(sub, "stop", "stop a model's local server", cmd_stop)
    return parser


def model_env(sub: Any, name: str, help_: str, func: Any) -> argparse.ArgumentParser:
    """A `<command> MODEL [--env ENV]` subcommand (env default: local)."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.add_argument("model")
    p.add_argument("--env", default="local", help="target environment (deploy/<env>.yml)")
    p.set_defaults(func=func)
    return p


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM (a CI job cancelled, `kill`) unwinds like Ctrl-C, so that every `finally`
    # runs: child processes are stopped and the MLflow run is marked FAILED.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code; from the command line (no `argv`), end the
    process here instead (see `end_process`)."""
    code = _run(argv)
    if argv is None:
        end_process(code)
    return code


def end_process(code: int) -> NoReturn:
    """Exit without the interpreter's teardown, which garbage-collects every module object
    several times over: 4-6 s once Axolotl, torch, MLflow and Prefect are imported, after the
    work is done. (Freezing the collector instead makes Triton's bindings report their types
    as leaked.) What exit does for us is done here: the other threads are joined, the atexit
    handlers run (Prefect's API server stops, logs and temporary folders are cleaned up),
    and the standard streams are flushed."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        _embedded_env()
        return int(args.func(args))
    except LlmopsError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except Exception as exc:  # a bug or an unexpected failure: say what, and how to see more
        if os.environ.get("LLMOPS_DEBUG") == "1":
            raise
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}\n"
                      "(set LLMOPS_DEBUG=1 for the traceback)", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
