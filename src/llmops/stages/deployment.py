"""One deployment path for every target: deploy, verify, roll back and the history, the
same logic for local vLLM processes, a Kubernetes cluster, or a kind registered later.

A target starts a version (beside the serving one, or as a rollout), says what serves now,
and commits or aborts once the engine has verified the endpoint with the same smoke, golden
minimum and load checks everywhere. Later capabilities (a stable router address, canaries)
are further target methods, not a second path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from llmops.config import DeployConfig, ModelSpec, ServeSettings, load_deploy, load_pins
from llmops.errors import CheckFailed, StageFailed, UsageError
from llmops.kubernetes.plan import ModelShape, Plan
from llmops.kubernetes.target import KubernetesTarget, Rendered
from llmops.process import activity
from llmops.registry.base import Registry
from llmops.serve.history import History
from llmops.serve.process import Deployment, list_records, reap_orphans
from llmops.serve.target import LocalTarget
from llmops.serve.verify import Verification, run_checks
from llmops.stages.context import Context
from llmops.stages.steps import Steps


class Endpoint(Protocol):
    """A started or serving version, wherever it runs."""

    @property
    def model(self) -> str: ...

    @property
    def env(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def served_name(self) -> str: ...

    @property
    def url(self) -> str:
        """Where clients call it."""
        ...

    @property
    def check_url(self) -> str:
        """Where a started version is verified before it serves (a local worker itself,
        before the router sends it anything; a cluster's Service)."""
        ...


E = TypeVar("E", bound=Endpoint)


@runtime_checkable
class Target(Protocol[E]):
    """Where a model is served (`deploy/<env>.yml`): every capability of a deployment is a
    method here, so the engine never asks which kind of target it holds. A target kind is
    added with `register_target_kind`, without changing this module."""

    env: str
    config: DeployConfig
    kind: str

    def config_problems(self) -> list[str]:
        """What in `deploy/<env>.yml` this target cannot serve from (check-config)."""
        ...

    def config_notes(self) -> list[str]:
        """What check-config should say but not fail on: a setting that only the deploy
        to this target refuses (a placeholder the platform team pins once)."""
        ...

    def preflight(self, spec: ModelSpec, version: str) -> None:
        """Before a deploy: CheckFailed when `version` must not be served here."""
        ...

    def start(self, spec: ModelSpec, version: str) -> E:
        """The version up beside (or rolled out over) the serving one, not yet verified;
        StageFailed after undoing it when it cannot start."""
        ...

    def takes_over(self, spec: ModelSpec, settings: ServeSettings) -> bool:
        """Whether `start` can serve the server that evaluated the candidate on this
        machine with `settings` (kept running for it by the release, `serve.handoff`)
        instead of starting the same weights again."""
        ...

    def serving(self, spec: ModelSpec) -> E:
        """What serves now (UsageError when nothing does)."""
        ...

    def settled(self, spec: ModelSpec) -> E | None:
        """What serves, once all of it runs one version and is ready; None while a rollout
        or an undo is unfinished or stuck, or when nothing serves."""
        ...

    def commit(self, started: E, action: str, checked: Verification) -> None:
        """Verified: the started version serves; record it."""
        ...

    def abort(self, started: E, action: str, exc: Exception) -> StageFailed:
        """Not verified: undo it; the error says what serves now."""
        ...

    def start_previous(self, spec: ModelSpec) -> E:
        """The previous verified version started again (not yet verified)."""
        ...

    def stop(self, spec: ModelSpec) -> E:
        """Stop serving the model in this environment; what was stopped."""
        ...

    def history(self, model: str) -> History: ...

    def api_key(self) -> str:
        """The key clients of this target's endpoints present (`Authorization: Bearer`)."""
        ...

    def api_key_hint(self) -> str:
        """Where a client finds that key, as a shell expression (never the key itself)."""
        ...

    def plan(self, spec: ModelSpec) -> tuple[ModelShape, Plan]:
        """How the model spreads over the target's GPUs (UsageError without GPUs)."""
        ...

    def render(self, spec: ModelSpec, version: str, out: Path) -> Rendered:
        """The version's manifests written to `out` (UsageError where none are applied)."""
        ...


TargetFactory = Callable[[str, DeployConfig, Context], "Target[Any]"]
_KINDS: dict[str, TargetFactory] = {}


def register_target_kind(kind: str, factory: TargetFactory) -> None:
    """Make `target: <kind>` in deploy/<env>.yml build its target with `factory`."""
    _KINDS[kind] = factory


def _local(env: str, config: DeployConfig, ctx: Context) -> Target[Any]:
    return LocalTarget(env, config, ctx.registry)


def _kubernetes(env: str, config: DeployConfig, ctx: Context) -> Target[Any]:
    return KubernetesTarget(env, config, ctx.registry, ctx.settings.project_api,
                            ctx.settings.api_key)


register_target_kind("local", _local)
register_target_kind("kubernetes", _kubernetes)


def target_for(env: str, ctx: Context) -> Target[Any]:
    """The target of `deploy/<env>.yml` (read once here, then passed down)."""
    config = load_deploy(env)
    make = _KINDS.get(config.target)
    if make is None:
        raise UsageError(f"deploy/{env}.yml: target: {config.target!r} is not a target kind "
                         f"llmops knows ({', '.join(sorted(_KINDS))})")
    return make(env, config, ctx)


def check_deploy(env: str) -> list[str]:
    """deploy/<env>.yml loads, names a known target kind, and that target can serve from
    it (a Kubernetes target: the serve lock's vLLM image, by digest); its notes."""
    target = target_for(env, Context())
    if problems := target.config_problems():
        raise UsageError("\n".join(f"deploy/{env}.yml: {p}" for p in problems))
    return target.config_notes()


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


def verify_started(spec: ModelSpec, target: Target[E], started: E, action: str,
                   registry: Registry | None = None) -> Verified:
    """Check a started version; commit it, or abort it (the previous one serves). An
    interruption (SIGTERM from a cancelled job, Ctrl-C) aborts it too, then goes on."""
    try:
        checked, problems = run_checks(spec, target.config.verify, started.check_url,
                                       started.served_name, target.api_key())
    except BaseException as exc:
        target.abort(started, action, exc if isinstance(exc, Exception)
                     else StageFailed(f"interrupted ({type(exc).__name__})"))
        raise
    if problems:
        failure = StageFailed(f"verification of {started.model} {started.version} at "
                              f"{started.check_url} failed: " + "; ".join(problems))
        raise target.abort(started, action, failure)
    target.commit(started, action, checked)
    if registry is not None:
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

    def after_rollback(self, spec: ModelSpec, target: Target[Any], reason: str) -> str:
        """What it did, in one line ('' when the pin already names what serves)."""
        pin = load_pins(target.env).models.get(spec.name)
        if pin is None:
            return ""
        try:  # never what a failed undo left half rolled out: that may be the failed one
            settled = target.settled(spec)
        except (UsageError, StageFailed):
            return ""
        if settled is None:
            return (f"registry/{target.env}.yml still pins {spec.name} {pin.version}: what "
                    f"serves in {target.env} has not settled on one ready version, so "
                    "nothing was pinned in its place")
        serving = settled.version
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


def start_version(spec: ModelSpec, target: Target[E], version: str) -> E:
    """The deploy step: the version started, the previous one still serving."""
    return target.start(spec, version)


def deploy_version(spec: ModelSpec, target: Target[Any], version: str, registry: Registry,
                   steps: Steps | None = None, pins: PinKeeper | None = None) -> Verified:
    """Start `version` on the target (step `deploy`) and verify it (step `verify`); a
    failure anywhere leaves the previous version serving (and raises StageFailed), and
    with `pins`, the environment's pin names the version that serves."""
    steps = steps or Steps()
    target.preflight(spec, version)
    try:
        started = steps("deploy", start_version, spec, target, version)
        return steps("verify", verify_started, spec, target, started, "deploy", registry)
    except StageFailed as exc:
        note = pins.after_rollback(spec, target, f"the deploy of {version} failed: "
                                   f"{str(exc).splitlines()[0]}") if pins else ""
        if not note:
            raise
        raise StageFailed(f"{exc}\n{note}") from exc


@dataclass(frozen=True)
class PinDeploy:
    """One pin of an environment after `deploy_pins`: deployed now (`verified`), or left
    as it was because its version already serves (`verified` None)."""

    model: str
    version: str
    verified: Verified | None


def deploy_pins(env: str, ctx: Context, local: bool = False) -> list[PinDeploy]:
    """After a pin's merge (`apply-promotion --deploy`): deploy every model whose pin in
    registry/<env>.yml names another version than the one that serves, and only those;
    a model whose pinned version already serves is not restarted. Every pin is tried; the
    failures (each undone, its previous version serving) are raised together at the end."""
    from llmops.config import load_model

    target = target_for(env, ctx)
    keeper = PinKeeper(ctx, local)
    done: list[PinDeploy] = []
    failures: list[str] = []
    for model, pin in load_pins(env).models.items():
        spec = load_model(model)
        settled = target.settled(spec)
        if settled is not None and settled.version == pin.version:
            done.append(PinDeploy(model, pin.version, None))
            continue
        try:
            done.append(PinDeploy(model, pin.version, deploy_version(
                spec, target, pin.version, ctx.registry, pins=keeper)))
        except StageFailed as exc:
            failures.append(f"{model} {pin.version}: {exc}")
    if failures:
        raise StageFailed(f"deploying the pins of registry/{env}.yml failed for "
                          f"{len(failures)} of {len(failures) + len(done)} models:\n"
                          + "\n".join(failures))
    return done


def verify_env(spec: ModelSpec, target: Target[Any]) -> Verified:
    """Check what serves in the environment again (a CI verify job); switch nothing."""
    serving = target.serving(spec)
    checked, problems = run_checks(spec, target.config.verify, serving.url,
                                   serving.served_name, target.api_key())
    if problems:
        raise StageFailed(f"{spec.name} {serving.version} at {serving.url}: "
                          + "; ".join(problems))
    return Verified(serving, checked)


def start_previous(spec: ModelSpec, target: Target[E]) -> E:
    return target.start_previous(spec)


def rollback_env(spec: ModelSpec, target: Target[Any], registry: Registry,
                 steps: Steps | None = None, pins: PinKeeper | None = None) -> Verified:
    """Serve the previous verified version again (step `rollback`), verified like a deploy
    (step `verify`); with `pins`, the environment's pin then names it."""
    steps = steps or Steps()
    started = steps("rollback", start_previous, spec, target)
    done = steps("verify", verify_started, spec, target, started, "rollback", registry)
    if pins and (note := pins.after_rollback(spec, target, "rolled back by hand")):
        activity.tell(note)
    return done


def history(model: str, target: Target[Any], last: int) -> list[dict[str, Any]]:
    return target.history(model).read()[-last:]


def stop(spec: ModelSpec, target: Target[E]) -> E:
    return target.stop(spec)


def local_status() -> tuple[list[int], list[Deployment]]:
    """`llmops status`: the pids of unrecorded servers stopped now (an interrupted deploy's),
    and every recorded local server."""
    reaped = reap_orphans()
    return reaped, list_records()


def parallel_plan(spec: ModelSpec, target: Target[Any]) -> tuple[ModelShape, Plan]:
    """How the model spreads over a GPU target's devices (`llmops plan`)."""
    return target.plan(spec)


def render_manifests(spec: ModelSpec, target: Target[Any], version: str,
                     out: Path) -> Rendered:
    """`deploy --render DIR`: the manifests written, nothing applied."""
    return target.render(spec, version, out)
