"""One deployment path, two targets: deploy, verify, roll back and the history, the same
logic for local vLLM processes and for a Kubernetes cluster.

A target starts a version (beside the serving one, or as a rollout), says what serves now,
and commits or aborts once the engine has verified the endpoint with the same smoke, golden
minimum and load checks everywhere. Later capabilities (a stable router address, canaries)
are further target methods, not a second path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmops.config import DeployConfig, ModelSpec, load_deploy, load_pins
from llmops.digests import folder_digest
from llmops.errors import CheckFailed, StageFailed, UsageError
from llmops.kubernetes.plan import ModelShape, Plan
from llmops.kubernetes.target import KubernetesTarget
from llmops.models.base import ensure_base_model
from llmops.process import activity
from llmops.registry.base import MlflowRegistry, Registry
from llmops.serve.target import LocalTarget
from llmops.serve.verify import Verification, run_checks
from llmops.stages.context import Context
from llmops.stages.steps import Steps


class Endpoint(Protocol):
    """A started or serving version, wherever it runs."""

    model: str
    env: str
    version: str
    served_name: str

    @property
    def url(self) -> str: ...


class Target(Protocol):
    """Where a model is served (`deploy/<env>.yml`)."""

    env: str
    config: DeployConfig
    kind: str

    def start(self, spec: ModelSpec, version: str) -> Any:
        """The version up beside (or rolled out over) the serving one, not yet verified;
        StageFailed after undoing it when it cannot start."""
        ...

    def serving(self, spec: ModelSpec) -> Any:
        """What serves now (UsageError when nothing does)."""
        ...

    def commit(self, started: Any, action: str, checked: Verification) -> None:
        """Verified: the started version serves; record it."""
        ...

    def abort(self, started: Any, action: str, exc: Exception) -> StageFailed:
        """Not verified: undo it; the error says what serves now."""
        ...

    def start_previous(self, spec: ModelSpec) -> Any:
        """The previous verified version started again (not yet verified)."""
        ...

    def history(self, model: str) -> list[dict[str, Any]]: ...

    def api_key(self) -> str:
        """The key clients of this target's endpoints present (`Authorization: Bearer`)."""
        ...


def target_for(env: str, ctx: Context) -> Target:
    """The target of `deploy/<env>.yml` (read once here, then passed down)."""
    config = load_deploy(env)
    if config.target == "kubernetes":
        return KubernetesTarget(env, config, ctx.registry, ctx.settings.project_api,
                                ctx.settings.api_key)
    return LocalTarget(env, config, ctx.registry)


@dataclass(frozen=True)
class Verified:
    endpoint: Endpoint  # what now serves
    check: Verification


def pinned_version(model: str, env: str, version: str | None) -> str:
    """`version`, or the one registry/<env>.yml pins."""
    if version:
        return version
    pin = load_pins(env).models.get(model)
    if pin is None:
        raise UsageError(f"no --version given and registry/{env}.yml pins no {model}")
    return pin.version


def check_identity(spec: ModelSpec, target: Target, version: str, registry: Registry) -> None:
    """Before a deploy: the version registry/<env>.yml pins serves the pin's digest (the
    files are verified against the registry's digest, so that must be the pinned one), and a
    local deploy runs on the base model the version was trained on (`base_model.digest`,
    recorded at registration), not on whatever folder has its name now. A Kubernetes target
    renders the pin's digest itself, which the pods' init container enforces."""
    if not isinstance(target, LocalTarget):
        return
    pin = load_pins(target.env).models.get(spec.name)
    mv = registry.get(spec.name, version)
    if pin is not None and pin.version == version and mv.digest != pin.digest:
        raise CheckFailed(f"registry/{target.env}.yml pins {spec.name} {version} at "
                          f"{pin.digest}, but the registry holds {mv.digest}; refusing to "
                          "deploy it (promote the version again, or find out who changed it)")
    want = mv.tags.get("base_model.digest")
    if want:
        base = Path(ensure_base_model(mv.base_model or spec.base_model))
        if base.is_dir() and (have := folder_digest(base)) != want:
            raise CheckFailed(f"{spec.name} {version} was trained on the base model {want}, "
                              f"but {base} is now {have}; refusing to serve the adapter on "
                              "another base (restore that base model, or retrain)")


def verify_started(spec: ModelSpec, target: Target, started: Endpoint, action: str,
                   registry: Registry | None = None) -> Verified:
    """Check a started version; commit it, or abort it (the previous one serves). An
    interruption (SIGTERM from a cancelled job, Ctrl-C) aborts it too, then goes on."""
    try:
        checked, problems = run_checks(spec, target.config.verify, started.url,
                                       started.served_name, target.api_key())
    except BaseException as exc:
        target.abort(started, action, exc if isinstance(exc, Exception)
                     else StageFailed(f"interrupted ({type(exc).__name__})"))
        raise
    if problems:
        failure = StageFailed(f"verification of {started.model} {started.version} at "
                              f"{started.url} failed: " + "; ".join(problems))
        raise target.abort(started, action, failure)
    target.commit(started, action, checked)
    if isinstance(registry, MlflowRegistry):
        registry.set_alias(spec.name, target.env, registry.get(spec.name, started.version))
    return Verified(started, checked)


@dataclass(frozen=True)
class PinKeeper:
    """Keeps registry/<env>.yml in step with what serves after a rollback (automatic or
    manual): a merge request pinning the serving version, or with `local` the pin file
    edited in place. Without it, the next `apply-promotion` would deploy the version that
    was rolled back again."""

    ctx: Context
    local: bool = False

    def after_rollback(self, spec: ModelSpec, target: Target, reason: str) -> str:
        """What it did, in one line ('' when the pin already names what serves)."""
        pin = load_pins(target.env).models.get(spec.name)
        if pin is None:
            return ""
        try:
            serving = target.serving(spec).version
        except (UsageError, StageFailed):
            return ""
        if serving == pin.version:
            return ""
        why = (f"registry/{target.env}.yml pins {spec.name} {pin.version}, but {serving} "
               f"serves: {reason}")
        from llmops.stages.registration import promote_version

        try:
            done = promote_version(spec.name, serving, target.env, self.ctx, self.local, why)
        except (UsageError, CheckFailed, StageFailed) as exc:
            return (f"registry/{target.env}.yml still pins {spec.name} {pin.version}, which "
                    f"does not serve; pin {serving} with `llmops promote {spec.name} "
                    f"{serving} --to {target.env}` ({exc})")
        if done.merge_request is not None:
            return (f"merge request !{done.merge_request.iid} pins {spec.name} {serving} in "
                    f"{target.env} again: {done.merge_request.web_url}")
        return f"pinned {spec.name} {serving} in {done.pin_file} again"


def start_version(spec: ModelSpec, target: Target, version: str) -> Any:
    """The deploy step: the version started, the previous one still serving."""
    return target.start(spec, version)


def deploy_version(spec: ModelSpec, target: Target, version: str, registry: Registry,
                   steps: Steps | None = None, pins: PinKeeper | None = None) -> Verified:
    """Start `version` on the target (step `deploy`) and verify it (step `verify`); a
    failure anywhere leaves the previous version serving (and raises StageFailed), and
    with `pins`, the environment's pin names the version that serves."""
    steps = steps or Steps()
    check_identity(spec, target, version, registry)
    try:
        started = steps("deploy", start_version, spec, target, version)
        return steps("verify", verify_started, spec, target, started, "deploy", registry)
    except StageFailed as exc:
        note = pins.after_rollback(spec, target, f"the deploy of {version} failed: "
                                   f"{str(exc).splitlines()[0]}") if pins else ""
        if not note:
            raise
        raise StageFailed(f"{exc}\n{note}") from exc


def verify_env(spec: ModelSpec, target: Target) -> Verified:
    """Check what serves in the environment again (a CI verify job); switch nothing."""
    serving = target.serving(spec)
    checked, problems = run_checks(spec, target.config.verify, serving.url,
                                   serving.served_name, target.api_key())
    if problems:
        raise StageFailed(f"{spec.name} {serving.version} at {serving.url}: "
                          + "; ".join(problems))
    return Verified(serving, checked)


def start_previous(spec: ModelSpec, target: Target) -> Any:
    return target.start_previous(spec)


def rollback_env(spec: ModelSpec, target: Target, registry: Registry,
                 steps: Steps | None = None, pins: PinKeeper | None = None) -> Verified:
    """Serve the previous verified version again (step `rollback`), verified like a deploy
    (step `verify`); with `pins`, the environment's pin then names it."""
    steps = steps or Steps()
    started = steps("rollback", start_previous, spec, target)
    done = steps("verify", verify_started, spec, target, started, "rollback", registry)
    if pins and (note := pins.after_rollback(spec, target, "rolled back by hand")):
        activity.tell(note)
    return done


def history(model: str, target: Target, last: int) -> list[dict[str, Any]]:
    return target.history(model)[-last:]


def parallel_plan(spec: ModelSpec, target: Target) -> tuple[ModelShape, Plan]:
    """How the model spreads over a GPU target's devices (`llmops plan`)."""
    if not isinstance(target, KubernetesTarget):
        raise UsageError(f"deploy/{target.env}.yml is a {target.kind} target with no gpu "
                         "section: nothing to plan")
    return target.plan(spec)


def render_manifests(spec: ModelSpec, target: Target, version: str,
                     out: Path) -> tuple[Path, int, str]:
    """`deploy --render DIR`: the manifests written, nothing applied; (file, objects, plan)."""
    if not isinstance(target, KubernetesTarget):
        raise UsageError(f"deploy/{target.env}.yml is a {target.kind} target: nothing to "
                         "render")
    path, count, plan = target.render(spec, version, out)
    return path, count, plan.explanation
