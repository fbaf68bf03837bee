"""One release record: what a registered version came from and where it went, with its
compute cost (`llmops lineage <model> [<version>]`).

Built only from what the release already records, wherever the registry is (MLflow's or
GitLab's, through the `Registry` protocol):

- the registered version: its tags (run id, base model and its digest, git commit, CI
  pipeline and job, `cost.*`) and digest, and the files registered with it, verified
  against its manifest: `data_report.json` (datasets, sha256), `axolotl.yml` (the resolved
  training config), `gate_report.json`/`.md` (the gate decision), `cost.json`;
- the MLflow run, when the tracking store can be reached (name, status, times);
- the deployment histories `.llmops/deployments/<model>-<env>.history.jsonl` of every
  environment in deploy/, with the serving cost of each verified deploy.

Compute follows `llmops.serve.cost`'s convention (a device is one GPU or one CPU machine).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmops.config import known_envs, load_deploy, load_pins
from llmops.errors import UsageError
from llmops.redact import redact, redact_value
from llmops.registry import provenance, signing
from llmops.registry.base import ModelVersion, Registry, parse_semver
from llmops.serve.history import History
from llmops.stages.runs import COST_FILE, mlflow_client

# The training settings worth a line (the whole resolved YAML is in the version).
CONFIG_KEYS = ("base_model", "adapter", "lora_r", "lora_alpha", "lora_dropout", "sequence_len",
               "sample_packing", "learning_rate", "lr_scheduler", "optimizer", "max_steps",
               "num_epochs", "micro_batch_size", "gradient_accumulation_steps", "bf16",
               "merge_lora", "seed")


@dataclass(frozen=True)
class DatasetUsed:
    path: str
    split: str
    examples: int
    sha256: str


@dataclass(frozen=True)
class TrainingRun:
    """The MLflow run that trained the version (only its id when the store is out of reach)."""

    run_id: str
    name: str = ""
    status: str = ""
    started: str = ""
    ended: str = ""
    experiment: str = ""
    params: int = 0  # the flattened config logged as `axolotl.*` params
    note: str = ""  # why the run could not be read


@dataclass(frozen=True)
class DeploymentEvent:
    """One history event of the version in one environment, with its serving cost."""

    env: str
    at: str
    action: str
    result: str
    detail: str = ""
    device: str = ""
    devices: int = 0
    tokens_per_s: float | None = None
    cost_per_million_tokens: float | None = None
    currency: str = ""


@dataclass(frozen=True)
class Lineage:
    model: str
    version: str
    registry: str  # which registry holds it
    registry_id: str
    source: str
    digest: str
    base_model: str
    base_pin: str  # the base model's folder digest or hub revision
    run: TrainingRun
    config: dict[str, Any] = field(default_factory=dict)
    datasets: list[DatasetUsed] = field(default_factory=list)
    commit: str = ""
    dirty: str = ""
    ci: dict[str, str] = field(default_factory=dict)  # gitlab.CI_* tags
    gate_passed: bool | None = None
    gate_rules: list[dict[str, Any]] = field(default_factory=list)
    gate_report: str = ""
    compute: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> Compute
    deployments: list[DeploymentEvent] = field(default_factory=list)
    signer: str = ""  # who signed the version (the `signature.signer` tag)
    provenance: dict[str, str] = field(default_factory=dict)  # provenance.summary

    def as_json(self) -> str:
        """The record as JSON, redacted."""
        return redact(json.dumps(asdict(self), indent=2, default=str))


def registry_kind(registry: Registry) -> str:
    name = type(registry).__name__
    return {"MlflowRegistry": "MLflow model registry",
            "GitlabRegistry": "GitLab model registry"}.get(name, name)


def latest_version(model: str, registry: Registry) -> str:
    """The highest registered version; where the registry cannot list versions (GitLab),
    the highest one the pins or the deployment histories name."""
    listing = getattr(registry, "versions", None)
    if callable(listing):
        found = [mv.version for mv in listing(model)]
    else:
        found = [pin.version for env in known_envs("registry")
                 if (pin := load_pins(env).models.get(model)) is not None]
        found += [str(e.get("version")) for env in known_envs()
                  for e in History(model, env).read() if e.get("version")]
    valid = []
    for version in set(found):
        try:
            valid.append((parse_semver(version), version))
        except UsageError:
            continue
    if not valid:
        raise UsageError(f"no version of {model} found to trace: name one "
                         f"(`llmops lineage {model} <version>`)")
    return max(valid)[1]


def read_package(folder: Path) -> dict[str, Any]:
    """The evidence files of a registered version's folder (absent ones empty)."""
    def text(name: str) -> str:
        path = folder / name
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def parsed(name: str) -> Any:
        raw = text(name)
        return json.loads(raw) if raw else {}

    return {"data": parsed("data_report.json"), "gate": parsed("gate_report.json"),
            "gate_md": text("gate_report.md"), "cost": parsed(COST_FILE),
            "provenance": parsed(provenance.PROVENANCE),
            "config": yaml.safe_load(text("axolotl.yml") or "{}") or {}}


def read_run(run_id: str) -> TrainingRun:
    """The run from the tracking store; its id and the reason when it cannot be read."""
    import datetime

    def when(ms: int | None) -> str:
        return "" if not ms else datetime.datetime.fromtimestamp(
            ms / 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    if not run_id:
        return TrainingRun("", note="the version names no run")
    try:
        client = mlflow_client()
        run = client.get_run(run_id)
        experiment = client.get_experiment(run.info.experiment_id).name
    except Exception as exc:  # another store, a deleted run, no access: the id still says
        return TrainingRun(run_id, note=f"not readable from the tracking store "
                                        f"({type(exc).__name__}: {str(exc)[:160]})")
    params = sum(1 for k in run.data.params if k.startswith("axolotl."))
    return TrainingRun(run_id, run.info.run_name or "", run.info.status, when(run.info.start_time),
                       when(run.info.end_time), experiment, params)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def deployment_events(model: str, version: str, envs: list[str]) -> list[DeploymentEvent]:
    """Every history event of `version` in `envs`, oldest first within each environment."""
    out = []
    for env in envs:
        for e in History(model, env).read():
            if str(e.get("version")) != version:
                continue
            cost = e.get("serving_cost") if isinstance(e.get("serving_cost"), dict) else {}
            assert isinstance(cost, dict)
            detail = "" if e.get("result") == "serving" else str(e.get("reason") or "")
            out.append(DeploymentEvent(
                env, str(e.get("at", "")), str(e.get("action", "")), str(e.get("result", "")),
                detail[:200], str(cost.get("device") or ""), int(cost.get("devices") or 0),
                _number(cost.get("tokens_per_s")), _number(cost.get("cost_per_million_tokens")),
                str(cost.get("currency") or "")))
    return out


def assemble(mv: ModelVersion, package: dict[str, Any], run: TrainingRun,
             deployments: list[DeploymentEvent], registry: str) -> Lineage:
    """The record from its parts (no I/O): the version, its files, its run, its events."""
    tags = mv.tags
    config = package.get("config") or {}
    gate = package.get("gate") or {}
    passed = gate.get("passed") if "passed" in gate else (
        {"true": True, "false": False}.get(tags.get("gate.passed", "")))
    compute = dict(package.get("cost") or {})
    for stage in ("train", "eval"):  # a version registered with tags but without the file
        if stage not in compute and f"cost.{stage}.device_hours" in tags:
            compute[stage] = {k.removeprefix(f"cost.{stage}."): v for k, v in tags.items()
                              if k.startswith(f"cost.{stage}.")}
    return Lineage(
        model=mv.name, version=mv.version, registry=registry, registry_id=mv.registry_id,
        source=redact(mv.source), digest=mv.digest,
        base_model=mv.base_model or str(config.get("base_model", "")),
        base_pin=tags.get("base_model.digest") or tags.get("base_model.revision", ""),
        run=run,
        config={k: redact_value(k, config[k]) for k in CONFIG_KEYS if k in config},
        datasets=[DatasetUsed(str(d.get("path", "")), str(d.get("split", "")),
                              int(d.get("examples") or 0), str(d.get("sha256", "")))
                  for d in (package.get("data") or {}).get("datasets", [])],
        commit=tags.get("mlflow.source.git.commit", ""), dirty=tags.get("git.dirty", ""),
        ci={k.removeprefix("gitlab."): redact(v) for k, v in sorted(tags.items())
            if k.startswith("gitlab.") and k != "gitlab.version"},
        gate_passed=passed if isinstance(passed, bool) else None,
        gate_rules=[{k: r.get(k) for k in ("metric", "candidate", "threshold", "passed",
                                           "reason")} for r in gate.get("rules", [])],
        gate_report=redact(str(package.get("gate_md") or "")),
        compute=compute,
        deployments=deployments,
        signer=tags.get(signing.SIGNER_TAG, ""),
        provenance=provenance.summary(package["provenance"]) if package.get("provenance")
        else {},
    )


def lineage(model: str, version: str | None, registry: Registry) -> Lineage:
    """The release record of `model` `version` (default: the latest registered)."""
    version = version.removeprefix("v") if version else latest_version(model, registry)
    mv = registry.get(model, version)
    with tempfile.TemporaryDirectory(prefix="llmops-lineage-") as tmp:
        package = read_package(registry.download(mv, Path(tmp) / "version"))
    return assemble(mv, package, read_run(mv.run_id), deployment_events(model, mv.version,
                                                                        known_envs()),
                    registry_kind(registry))


def serving_cost_line(event: DeploymentEvent) -> str:
    """'412.0 tokens/s on 1 × cpu, 0.3372 USD per million tokens' ('' when not measured)."""
    if event.tokens_per_s is None:
        return ""
    line = f"{event.tokens_per_s:g} tokens/s on {event.devices} × {event.device}"
    if event.cost_per_million_tokens is not None:
        line += f", {event.cost_per_million_tokens:.4g} {event.currency} per million tokens"
    return line


def summary_markdown(record: Lineage) -> str:
    """The lineage and cost as Markdown, for release notes."""
    lines = ["### Lineage", "",
             f"- registry: {record.registry}, version {record.version} (id "
             f"{record.registry_id}), digest `{record.digest}`",
             f"- base model: `{record.base_model}`"
             + (f" (`{record.base_pin}`)" if record.base_pin else ""),
             f"- MLflow run: `{record.run.run_id}`"
             + (f" ({record.run.name}, {record.run.status})" if record.run.name else ""),
             f"- git commit: `{record.commit or 'unknown'}`",
             f"- CI pipeline: {record.ci.get('CI_PIPELINE_URL', 'not built in CI')}",
             f"- CI job: {record.ci.get('CI_JOB_URL', 'not built in CI')}",
             "- release gate: " + {True: "passed", False: "refused", None: "unknown"}[
                 record.gate_passed],
             f"- signed by: {record.signer or 'nobody (unsigned)'}"]
    if p := record.provenance:
        lines.append(f"- provenance (`provenance.json`, in-toto SLSA v1, signed with the "
                     f"files): commit `{p['commit']}`, {p['pipeline']}, {p['datasets']} "
                     f"datasets, {p['locks']} locks, images {p['images']}, vLLM {p['engine']}")
    lines += [f"- dataset `{Path(d.path).name}` ({d.split}, {d.examples} examples): sha256 "
              f"`{d.sha256}`" for d in record.datasets]
    lines += ["", "### Cost", ""]
    for stage, label in (("train", "training"), ("eval", "evaluation")):
        if (c := record.compute.get(stage)) is not None:
            lines.append(f"- {label}: {float(c.get('device_hours', 0)):.4g} device-hours "
                         f"({c.get('devices')} × {c.get('device')}, "
                         f"{float(c.get('seconds', 0)):.1f} s)")
    served = [e for e in record.deployments if e.tokens_per_s is not None]
    lines += [f"- serving in {e.env} ({e.at}): {serving_cost_line(e)}" for e in served]
    if not served:
        lines.append("- serving: no verified deploy with a load test recorded yet")
    lines += ["", "A device is one GPU, or one CPU machine (all its cores)."]
    return redact("\n".join(lines) + "\n")


# --- llmops lineage --verify -------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """What `llmops lineage --verify` established: per environment, whether its trusted
    signers accept the version's signature; per claim of the provenance, its check."""

    model: str
    version: str
    digest: str
    signature: dict[str, tuple[bool | None, str]]  # env → (accepted, who or why not)
    checks: list[provenance.Check]

    @property
    def failed(self) -> bool:
        """No environment accepts the signature, or a checked digest differs."""
        accepted = any(ok for ok, _ in self.signature.values())
        return not accepted or any(c.ok is False for c in self.checks)


def verify(model: str, version: str | None, registry: Registry) -> Verified:
    """Check the version's files against its manifest (the download), its signature against
    every environment's trusted signers, and each digest of its provenance statement that
    this machine can reach."""
    from llmops.config.paths import repo_root
    from llmops.errors import StageFailed

    version = version.removeprefix("v") if version else latest_version(model, registry)
    mv = registry.get(model, version)
    root = repo_root()
    with tempfile.TemporaryDirectory(prefix="llmops-verify-") as tmp:
        files = registry.download(mv, Path(tmp) / "version")
        accepted: dict[str, tuple[bool | None, str]] = {}
        for env in known_envs():
            try:
                who = signing.verify_version(files, load_deploy(env).signing,
                                             f"{model} {mv.version}")
                accepted[env] = (True, who)
            except UsageError as exc:  # a trusted key this checkout lacks
                accepted[env] = (None, str(exc))
            except StageFailed as exc:
                accepted[env] = (False, str(exc).split(": ", 1)[-1])
        path = files / provenance.PROVENANCE
        if not any(ok for ok, _ in accepted.values()):
            # Its claims are worth checking only once a trusted signer made them.
            checks = [provenance.Check(provenance.PROVENANCE, None, "not checked: no "
                                       "environment trusts the signature")]
        elif path.is_file():
            checks = provenance.check(json.loads(path.read_text()), files, root,
                                      lambda c, rel: _git_show(root, c, rel), _run_exists,
                                      _base_digest)
        else:
            checks = [provenance.Check(provenance.PROVENANCE, False, "the version carries "
                                       "none (registered before provenance was recorded)")]
    return Verified(model, mv.version, mv.digest, accepted, checks)


def _git_show(root: Path, commit: str, rel: str) -> bytes | None:
    """`rel` at `commit` in this clone (rel "": b"" when the commit exists), else None."""
    import subprocess

    if not commit or not all(c in "0123456789abcdef" for c in commit):
        return None
    argv = ["git", "-C", str(root), "cat-file", "-e", f"{commit}^{{commit}}"] if not rel \
        else ["git", "-C", str(root), "show", f"{commit}:{rel}"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _run_exists(run_id: str) -> bool | None:
    run = read_run(run_id)
    return True if run.status else None


def _base_digest(ref: str) -> str | None:
    """The digest of a base model folder of this checkout's state (`.llmops/models/`), the
    only place a local base model is built: no other folder a statement names is read."""
    from llmops.config.paths import repo_root, state_dir
    from llmops.digests import folder_digest

    path = (repo_root() / ref).resolve()
    models = (state_dir() / "models").resolve()
    return folder_digest(path) if path.is_dir() and path.is_relative_to(models) else None
