"""The CLI's commands: each parses nothing and composes nothing; it calls one engine
function (`llmops.stages`) with what the arguments name, and prints the result.

Each command imports what it uses, so that a light one (`status`, `history`) does not load
the whole engine."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from llmops.cli import output
from llmops.errors import CheckFailed, DataRefused, GateRefused, UsageError


def cmd_release(args: argparse.Namespace) -> int:
    from llmops.orchestration.prefect_api import release_via_prefect

    summary, started = release_via_prefect(args.model, args.env, args.version)
    total = time.time() - started
    output.print_summary(summary, total)
    output.write_summary(summary, total, started)
    return 0


def cmd_validate_data(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import data

    if args.changed_since:
        if args.model or args.dataset:
            raise UsageError("--changed-since picks the models itself: give no model or "
                             "--dataset with it")
        return validate_changed(args.changed_since)
    if not args.model:
        raise UsageError("validate-data needs a model (or --changed-since REF)")
    spec = load_model(args.model)
    only = data.dataset_override(spec, args.dataset) if args.dataset else None
    try:
        output.print_data_report(data.validate_data(spec, only=only))
    except DataRefused as exc:
        output.print_data_report(exc.report)  # type: ignore[arg-type]
        raise
    return 0


def validate_changed(since: str) -> int:
    from llmops.stages import data

    results = data.validate_changed(since)
    if not results:
        print(f"no model's datasets, golden sets, suite or training YAML changed since "
              f"{since}: nothing to validate")
    for r in results:
        print(f"{r.name}: changed {', '.join(r.files)}")
        if r.report is not None:
            output.print_data_report(r.report)
        if r.refusal:
            output.error(r.name, r.refusal)
    if refused := [r.name for r in results if r.refusal]:
        raise CheckFailed(f"the data gate refused {', '.join(refused)}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Every YAML the release reads, each problem reported (exit 2 if any)."""
    from llmops.stages import data

    checks = data.check_all_configs(args.models)
    for c in checks:
        if c.problem:
            output.error(c.label, c.problem)
        else:
            print(f"{c.label}: ok")
        for note in c.notes:
            print(f"  note: {note}")
    if bad := sum(1 for c in checks if c.problem):
        raise UsageError(f"{bad} of {len(checks)} configurations are invalid (above)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import evaluation
    from llmops.stages.context import Context

    try:
        _, gate = evaluation.evaluate_candidate(load_model(args.model), args.candidate,
                                                Context().registry, env=args.env)
    except GateRefused as exc:
        print(Path(str(exc.report_path)).read_text())
        raise
    print(gate.read_text())
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import registration
    from llmops.stages.context import Context

    mv = registration.register_stage(load_model(args.model), args.run, args.version,
                                     Context())
    print(f"registered {mv.name} {mv.version} (registry id {mv.registry_id}) digest {mv.digest}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from llmops.stages import registration
    from llmops.stages.context import Context

    done = registration.promote_version(args.model, args.version, args.to, Context(),
                                        args.local)
    if done.merge_request is not None:
        print(f"merge request !{done.merge_request.iid}: {done.merge_request.web_url}")
    else:
        print(f"pinned {args.model} {args.version} in {done.pin_file}")
    return 0


def cmd_apply_promotion(args: argparse.Namespace) -> int:
    from llmops.stages import registration
    from llmops.stages.context import Context

    ctx = Context()
    for mv in registration.apply_promotion(args.env, ctx):
        print(f"{args.env}: {mv.name} {mv.version} ({mv.digest})")
    if args.deploy:
        from llmops.stages import deployment

        for pin in deployment.deploy_pins(args.env, ctx, args.local):
            if pin.verified is None:
                print(f"{args.env}: {pin.model} {pin.version} already serves; not redeployed")
            else:
                output.print_verification(pin.verified)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import deployment
    from llmops.stages.context import Context

    spec, ctx = load_model(args.model), Context()
    target = deployment.target_for(args.env, ctx)
    version = deployment.pinned_version(spec.name, args.env, args.version)
    if args.render:
        done = deployment.render_manifests(spec, target, version, Path(args.render))
        print(f"rendered {done.objects} manifests to {done.path} ({done.explanation})")
        return 0
    output.print_verification(deployment.deploy_version(
        spec, target, version, ctx.registry, pins=deployment.PinKeeper(ctx, args.local)))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import deployment
    from llmops.stages.context import Context

    target = deployment.target_for(args.env, Context())
    output.print_verification(deployment.verify_env(load_model(args.model), target))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import training
    from llmops.stages.context import Context

    done = training.train_candidate(load_model(args.model), Context(), args.backend,
                                    args.resume)
    print(f"trained {args.model}: adapter {done.result.adapter_dir}")
    if args.dotenv:  # for the next CI jobs (artifacts:reports:dotenv)
        Path(args.dotenv).write_text(f"LLMOPS_RUN_ID={done.run.run_id}\n")
    return 0


def cmd_release_notes(args: argparse.Namespace) -> int:
    """Files for a GitLab Release: notes.md (summary, gate report), the model card."""
    from llmops.config import load_model
    from llmops.stages import registration
    from llmops.stages.context import Context

    out = registration.release_notes(load_model(args.model), args.version, Path(args.out),
                                     Context().registry)
    print(f"release notes for {args.model} {args.version} in {out}/")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import deployment
    from llmops.stages.context import Context

    ctx = Context()
    target = deployment.target_for(args.env, ctx)
    output.print_verification(deployment.rollback_env(
        load_model(args.model), target, ctx.registry,
        pins=deployment.PinKeeper(ctx, args.local)), action="rolled back to")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from llmops.stages import deployment
    from llmops.stages.context import Context

    target = deployment.target_for(args.env, Context())
    output.print_history(args.model, args.env,
                         deployment.history(args.model, target, args.last))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from llmops.stages import lineage
    from llmops.stages.context import Context

    if getattr(args, "verify", False):
        verified = lineage.verify(args.model, args.version, Context().registry)
        output.print_verified(verified)
        return 1 if verified.failed else 0
    record = lineage.lineage(args.model, args.version, Context().registry)
    if args.json:
        print(record.as_json())
    else:
        output.print_lineage(record)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from llmops.stages.doctor import doctor

    report = doctor()
    output.print_doctor(report)
    return 0 if report.ok else 1


def cmd_plan(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import deployment
    from llmops.stages.context import Context

    target = deployment.target_for(args.env, Context())
    shape, plan = deployment.parallel_plan(load_model(args.model), target)
    g = target.config.gpu
    assert g is not None  # a GPU target: parallel_plan refused any other
    print(f"{args.model} on {args.env} ({g.nodes} × {g.gpus_per_node} × {g.gpu_type}, "
          f"{shape.params:,} parameters): {plan.explanation}")
    return 0 if plan.fits else 1


def cmd_status(args: argparse.Namespace) -> int:
    from llmops.stages import deployment

    reaped, running = deployment.local_status()
    for pid in reaped:
        print(f"stopped an unrecorded server (pid {pid}) whose deploy was interrupted")
    output.print_status(running)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages import deployment
    from llmops.stages.context import Context

    target = deployment.target_for(args.env, Context())
    dep = deployment.stop(load_model(args.model), target)
    output.console.print(f"stopped {dep.model} {dep.version} ({dep.url})")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Files written, then what to fill in; exit 2 when the config check finds problems."""
    from llmops.stages.init import init_model

    done = init_model(args.name, Path(args.source))
    print(f"wrote {done.axolotl_path} (from {args.source}"
          + (", comments kept" if done.comments_kept else ", dumped again: comments lost")
          + ")")
    for key in done.removed_keys:
        print(f"  removed {key}: the pipeline sets it for each run")
    print(f"wrote {done.validation_path} (data checks and gates, explained in comments)")
    print(f"wrote {done.golden_path} (a template: replace its example rows)"
          if done.golden_written else f"kept {done.golden_path} (already there)")
    print(done.deploy_note)
    for problem in done.problems:
        output.error("config check", problem)
    print("\nnext:")
    for i, step in enumerate(done.next_steps(), start=1):
        print(f"  {i}. {step}")
    if done.problems:
        raise UsageError(f"the files are written, but {done.axolotl_path} does not pass the "
                         f"config check (above): fix it, then `llmops check-config "
                         f"{done.name}`")
    return 0


def cmd_build_retention(args: argparse.Namespace) -> int:
    from llmops.config import load_model
    from llmops.stages.retention import build_retention

    done = build_retention(load_model(args.model))
    print(f"kept {done.kept} of {done.asked} prompts the base model answered correctly: "
          + ", ".join(f"{c} {k}/{n}" for c, (k, n) in done.by_category.items()))
    print(f"wrote {done.path} and {done.provenance_path} (review and commit them)")
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    from llmops.config.paths import repo_root
    from llmops.config.reference import OUT, markdown

    text = markdown()
    if args.out == "-":
        print(text, end="")
        return 0
    out = Path(args.out) if args.out else repo_root() / OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out or OUT}")
    return 0
