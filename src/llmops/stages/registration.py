"""Registering a gated run, promoting a version, and the files of a GitLab Release."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmops.config import ModelSpec
from llmops.digests import folder_digest
from llmops.errors import CheckFailed, UsageError
from llmops.redact import redact, redact_mapping
from llmops.registry import modelcard, promote, provenance, signing
from llmops.registry.base import ModelVersion, Registry
from llmops.stages.context import Context
from llmops.stages.runs import COST_FILE, Run, read_compute, run_dir


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise UsageError(f"{path}: no {what}; run the earlier stages of this run first")
    return json.loads(path.read_text())


def build_package(spec: ModelSpec, run_id: str, tags: dict[str, str],
                  images: dict[str, str] | None = None) -> tuple[Path, dict[str, str]]:
    """The folder to register (adapter, config, reports, model card, provenance) and its
    lineage (with the commit and CI `tags`); `images`: the CI images by digest."""
    images = images or {}
    folder_in = run_dir(spec.name, run_id)
    gate = _read_json(folder_in / "gate_report.json", "gate report")
    if not gate.get("passed"):
        raise CheckFailed(f"run {run_id} did not pass its release gate: nothing to register")
    evals = _read_json(folder_in / "eval_report.json", "evaluation report")
    data = _read_json(folder_in / "data_report.json", "data report")
    resolved = yaml.safe_load((folder_in / "axolotl.resolved.yml").read_text())
    folder = folder_in / "package"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(folder_in / name, folder / name)
    if (folder_in / "merged" / "config.json").is_file():  # merge_lora: true in the YAML
        shutil.copytree(folder_in / "merged", folder / "merged")
    shutil.copy2(folder_in / "axolotl.resolved.yml", folder / "axolotl.yml")
    for name in ("gate_report.json", "gate_report.md", "data_report.json", "eval_report.json"):
        shutil.copy2(folder_in / name, folder / name)
    for name in ("gate_report.html", "data_report.html", COST_FILE):  # newer runs
        if (folder_in / name).is_file():
            shutil.copy2(folder_in / name, folder / name)
    compute = {k: v for stage, used in read_compute(folder_in).items()
               for k, v in used.tags(stage).items()}
    lineage = redact_mapping({
        "run_id": run_id,
        "base_model": str(resolved["base_model"]),
        "data_sha256": ",".join(d["sha256"] for d in data["datasets"] if d["split"] == "train"),
        "gate.passed": "true",
        **base_identity(resolved),
        **compute,
        **tags,
    })
    facts = build_facts(spec, run_id, resolved, data, lineage, images)
    (folder / "README.md").write_text(modelcard.render(
        spec, data, evals["metrics"], gate, lineage,
        provenance.summary(provenance.statement(facts, folder))))
    redact_files(folder)
    # Last: it holds the digests of the (redacted) reports; redacted itself in turn.
    provenance.write(facts, folder)
    redact_files(folder)
    return folder, lineage


def build_facts(spec: ModelSpec, run_id: str, resolved: dict[str, Any], data: dict[str, Any],
                lineage: dict[str, str], images: dict[str, str]) -> provenance.BuildFacts:
    """What the provenance statement says about this build (nothing a retry changes)."""
    from llmops.config.paths import repo_root
    from llmops.digests import sha256_file
    from llmops.serve.vllm_release import vllm_version

    root = repo_root()
    ci = {k.removeprefix("gitlab."): v for k, v in lineage.items()
          if k in ("gitlab.CI_PIPELINE_ID", "gitlab.CI_PIPELINE_URL", "gitlab.CI_JOB_NAME",
                   "gitlab.CI_PROJECT_PATH", "gitlab.CI_COMMIT_TAG")}
    return provenance.BuildFacts(
        model=spec.name, run_id=run_id, commit=lineage.get("mlflow.source.git.commit", ""),
        base_model=str(resolved["base_model"]), base_identity=base_identity(resolved),
        datasets=list(data.get("datasets") or []),
        locks={str(p.relative_to(root)): sha256_file(p)
               for p in sorted((root / "requirements").glob("*.lock"))},
        images=images, engine=vllm_version(), ci=ci,
        builder=ci.get("CI_PIPELINE_URL") or "local")


# The files of a package, and of release notes, that this pipeline writes (the weights
# and the tokenizer are the trainer's and are shipped as they are).
AUTHORED = ("axolotl.yml", "README.md", "gate_report.json", "gate_report.md",
            "data_report.json", "eval_report.json", "notes.md", "gate_report.html",
            "data_report.html", provenance.PROVENANCE)


def redact_files(folder: Path) -> None:
    """Redact every file this pipeline wrote into a package, in place, before the manifest
    is computed: whatever reached a report or the config leaves without its secrets."""
    for name in AUTHORED:
        path = folder / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            if (clean := redact(text)) != text:
                path.write_text(clean, encoding="utf-8")


def base_identity(resolved: dict[str, Any]) -> dict[str, str]:
    """What pins the base model the adapter was trained on (a path or a hub id alone does
    not): the digest of a local base model folder, or the hub revision the config pins."""
    base = Path(str(resolved["base_model"]))
    if base.is_dir():
        return {"base_model.digest": folder_digest(base)}
    if resolved.get("revision_of_model"):
        return {"base_model.revision": str(resolved["revision_of_model"])}
    return {}


def register_stage(spec: ModelSpec, run: Run | str, version: str | None,
                   ctx: Context) -> ModelVersion:
    """Register the run's adapter with its card, config, reports and sha256 manifest, as
    `version`, else the CI tag's, else the next patch."""
    run_id = run.run_id if isinstance(run, Run) else run
    # Who signs is on the card (the same key gives the same line: a retry's digest holds).
    signed_by = signing.signer(ctx.settings.signing).describe()
    folder, lineage = build_package(spec, run_id, {**ctx.run_tags,
                                                   signing.SIGNER_TAG: signed_by},
                                    ctx.settings.images)
    return ctx.registry.register(spec.name, folder, run_id,
                                 version or ctx.settings.tag_version, lineage)


@dataclass(frozen=True)
class Promotion:
    """Where a version was pinned: a pin file edited in place, or a merge request."""

    pin_file: Path | None = None
    merge_request: promote.MergeRequest | None = None


def promote_version(model: str, version: str, env: str, ctx: Context,
                    local: bool = False, reason: str | None = None) -> Promotion:
    """Pin a gated version to `env`: by merge request (GitLab), or with `local` in place.
    With `reason`, a re-pin after a rollback: the version that serves now, saying why (Git
    stays the truth, so the next `apply-promotion` does not redeploy the one that failed)."""
    registry = ctx.registry
    if local:
        return Promotion(pin_file=promote.promote_local(model, version, env, registry))
    mv = promote.checked_version(registry, model, version)
    return Promotion(merge_request=promote.promote_mr(
        model, version, env, registry, promote.gitlab_project(ctx.settings),
        redact(promote.gate_evidence(registry, mv)),
        reason=redact(reason) if reason else None))


def apply_promotion(env: str, ctx: Context) -> list[ModelVersion]:
    """After a pin's merge: every pin of registry/<env>.yml checked against the registry,
    and the environment's aliases pointed at them."""
    return promote.apply_promotion(env, ctx.registry)


def release_notes(spec: ModelSpec, version: str, out: Path, registry: Registry) -> Path:
    """notes.md (summary and gate report), README.md (the model card) and gate_report.md of
    a registered version, in `out`."""
    from llmops.config import known_envs
    from llmops.stages import lineage

    mv = registry.get(spec.name, version)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = registry.download(mv, Path(tmp) / "v")
        for name in ("README.md", "gate_report.md"):
            shutil.copy2(files / name, out / name)
        package = lineage.read_package(files)
    gate = (out / "gate_report.md").read_text()
    record = lineage.assemble(mv, package, lineage.TrainingRun(mv.run_id),
                              lineage.deployment_events(spec.name, mv.version, known_envs()),
                              lineage.registry_kind(registry))
    (out / "notes.md").write_text(
        f"## {spec.name} {mv.version}\n\nBase model `{mv.base_model}`, files digest "
        f"`{mv.digest}`, MLflow run `{mv.run_id}`.\n\n{lineage.summary_markdown(record)}\n"
        f"{gate}\n")
    redact_files(out)  # published as a GitLab Release: whatever the version carried
    return out
