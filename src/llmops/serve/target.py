"""The local target: vLLM CPU servers on 127.0.0.1, started beside the serving one, behind
one stable address per model (the vLLM router, `llmops.serve.router`).

A new version's server starts while the previous one keeps serving. Verified (by the engine,
`llmops.stages.deployment`, on the new server itself): the new server becomes the
environment's record and joins the router; the previous one leaves it, finishes its
in-flight requests and is stopped. Failed (files that do not match the manifest, a server
that never becomes healthy, a failed check): the new server is stopped, never having reached
the router, and the recorded deployment serves again, restarted with its own recorded
arguments if it is not running. Every outcome is appended to
the environment's history (`llmops history`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import httpx

from llmops.compute import serve_settings
from llmops.config import DeployConfig, ModelSpec, ServeSettings, load_pins
from llmops.config.paths import state_subdir
from llmops.digests import folder_digest, verify_manifest
from llmops.errors import CheckFailed, StageFailed, UsageError
from llmops.models.base import ensure_base_model
from llmops.process import activity
from llmops.registry import provenance, signing
from llmops.registry.base import ModelVersion, Registry
from llmops.serve import handoff, router
from llmops.serve import process as serve
from llmops.serve.cost import history_fields
from llmops.serve.history import History
from llmops.serve.verify import Verification


@dataclass
class LocalTarget:
    """`deploy/<env>.yml` with `target: local`."""

    env: str
    config: DeployConfig
    registry: Registry
    kind = "local"

    def config_problems(self) -> list[str]:
        return []

    def config_notes(self) -> list[str]:
        return []

    def preflight(self, spec: ModelSpec, version: str) -> None:
        """The version registry/<env>.yml pins serves the pin's digest (the files are
        verified against the registry's digest, so that must be the pinned one), on the
        base model it was trained on (`base_model.digest`, recorded at registration), not
        on whatever folder has its name now."""
        address = serve_settings(self.config, spec.name).address
        if problem := router.address_problem(spec.name, self.env, address):
            raise UsageError(problem)
        pin = load_pins(self.env).models.get(spec.name)
        mv = self.registry.get(spec.name, version)
        if pin is not None and pin.version == version and mv.digest != pin.digest:
            raise CheckFailed(f"registry/{self.env}.yml pins {spec.name} {version} at "
                              f"{pin.digest}, but the registry holds {mv.digest}; refusing "
                              "to deploy it (promote the version again, or find out who "
                              "changed it)")
        want = mv.tags.get("base_model.digest")
        if want:
            base = Path(ensure_base_model(mv.base_model or spec.base_model))
            if base.is_dir() and (have := folder_digest(base)) != want:
                raise CheckFailed(f"{spec.name} {version} was trained on the base model "
                                  f"{want}, but {base} is now {have}; refusing to serve the "
                                  "adapter on another base (restore that base model, or "
                                  "retrain)")

    def start(self, spec: ModelSpec, version: str) -> serve.Deployment:
        """Fetch the version, check its manifest, start its server beside the serving one."""
        serve.reap_orphans()
        settings = serve_settings(self.config, spec.name)
        mv = self.registry.get(spec.name, version)
        dest = state_subdir("deployments") / spec.name / mv.version
        try:
            try:  # already here (a redeploy, the serving version): reuse it if it verifies
                verify_manifest(dest, mv.digest)
                files = dest
            except StageFailed:
                files = self.registry.download(mv, dest)
            self.verify_signed(files, f"{spec.name} {mv.version}")
            base = self.signed_base(files, mv, spec.base_model)
            prepared = serve.prepare(spec.name, self.env, mv.version, base, files, settings,
                                     digest=mv.digest)
            # Within a release, the server that evaluated these very weights, if kept.
            dep = handoff.take_over(prepared, settings, serve.local_api_key()) or \
                serve.start_prepared(prepared, settings)
            return replace(dep, address=settings.address)
        except StageFailed as exc:
            raise self.failed(spec.name, mv.version, "deploy", exc) from exc

    def takes_over(self, spec: ModelSpec, settings: ServeSettings) -> bool:
        """A server that evaluated merged or int8 weights with this environment's own
        settings (`serve.start` then checks the files, arguments and key, `handoff`)."""
        mine = serve_settings(self.config, spec.name)
        return mine.serve == "merged" and mine == settings

    def verify_signed(self, files: Path, what: str) -> None:
        """Refuse files that no identity of `signing.trust` signed (or changed since)."""
        signer = signing.verify_version(files, self.config.signing, what)
        activity.tell(f"{what}: signature verified ({signer})")

    @staticmethod
    def signed_base(files: Path, mv: ModelVersion, default: str) -> str:
        """The base model (made available) that the version's signed files name, refused
        where the registry's tags, which are not signed, say otherwise, or where it is not
        the base the version was trained on."""
        name, digest = provenance.signed_base(files)
        what = f"{mv.name} {mv.version}"
        if name and mv.base_model and name != mv.base_model:
            raise StageFailed(f"{what}: the registry's tag names the base model "
                              f"{mv.base_model}, its signed axolotl.yml {name}; refusing to "
                              "serve it on another base (someone changed the tag)")
        base = ensure_base_model(name or mv.base_model or default)
        if digest and Path(base).is_dir() and (have := folder_digest(Path(base))) != digest:
            raise StageFailed(f"{what} was trained on the base model {digest} (its signed "
                              f"provenance), but {base} is now {have}; refusing to serve "
                              "the adapter on another base (restore that base, or retrain)")
        return base

    def serving(self, spec: ModelSpec) -> serve.Deployment:
        serve.reap_orphans()
        dep = serve.load_record(spec.name, self.env)
        if dep is None:
            raise UsageError(f"no deployment of {spec.name} in {self.env}; see `llmops status`")
        return dep

    def settled(self, spec: ModelSpec) -> serve.Deployment | None:
        """The recorded server: a local deploy switches to a verified server at once."""
        serve.reap_orphans()
        return serve.load_record(spec.name, self.env)

    def commit(self, dep: serve.Deployment, action: str, checked: Verification) -> None:
        """Verified: the new server becomes the record; the one it replaces is stopped."""
        activate(dep, serve_settings(self.config, dep.model).drain_timeout_s)
        self.history(dep.model).record(
            dep.version, action, "serving",
            reason=f"load: {checked.load}" if checked.load else "",
            fields={**dep.history_fields(), **history_fields(self.config, checked.load)})

    def abort(self, dep: serve.Deployment, action: str, exc: Exception) -> StageFailed:
        """Verification failed: stop the new server; the recorded one serves again."""
        dep.kill()
        return self.failed(dep.model, dep.version, action, exc, dep)

    def start_previous(self, spec: ModelSpec) -> serve.Deployment:
        """Start the previous verified version again, with its recorded arguments."""
        serve.reap_orphans()
        settings = serve_settings(self.config, spec.name)
        current = serve.load_record(spec.name, self.env)
        history = self.history(spec.name)
        event = history.previous_good(current.version if current else None, need_args=True)
        if event is None:
            raise UsageError(f"no earlier verified deployment of {spec.name} in {self.env} to "
                             f"roll back to; see {history.path}")
        adapter_dir = Path(str(event["adapter_dir"]))
        if not adapter_dir.is_dir():
            raise UsageError(f"{adapter_dir} (files of {event['version']}) is gone: deploy it "
                             f"again with `llmops deploy {spec.name} --env {self.env} "
                             f"--version {event['version']}`")
        verify_manifest(adapter_dir, str(event.get("digest", "")))
        self.verify_signed(adapter_dir, f"{spec.name} {event['version']}")
        record = serve.Deployment(spec.name, self.env, str(event["version"]), spec.name,
                                  str(event["base_model"]), str(adapter_dir), 0, 0,
                                  list(event["args"]), "", digest=str(event.get("digest", "")),
                                  address=settings.address)
        activity.tell(f"rolling back {spec.name} in {self.env}: "
                      f"{current.version if current else 'nothing'} → {record.version}")
        try:
            return serve.restart(record, settings)
        except StageFailed as exc:
            raise self.failed(spec.name, record.version, "rollback", exc) from exc

    def stop(self, spec: ModelSpec) -> serve.Deployment:
        router.stop(spec.name, self.env)  # one model per router: nothing is left behind it
        return serve.stop(spec.name, self.env)

    def history(self, model: str) -> History:
        return History(model, self.env)

    def api_key(self) -> str:
        return serve.local_api_key()

    def api_key_hint(self) -> str:
        return f"$(cat {serve.api_key_path()})"

    def plan(self, spec: ModelSpec) -> NoReturn:
        raise UsageError(f"deploy/{self.env}.yml is a local target with no gpu section: "
                         "nothing to plan")

    def render(self, spec: ModelSpec, version: str, out: Path) -> NoReturn:
        raise UsageError(f"deploy/{self.env}.yml is a local target: nothing to render")

    def failed(self, model: str, version: str, action: str, exc: Exception,
               dep: serve.Deployment | None = None) -> StageFailed:
        self.history(model).record(version, action, "failed", str(exc),
                                   dep.history_fields() if dep else None)
        return StageFailed(f"{exc}\n{self.restore(model)}")

    def restore(self, model: str) -> str:
        """Make the environment's recorded deployment serve; say what serves now."""
        env = self.env
        record = serve.load_record(model, env)
        if record is None:
            return f"nothing to roll back to: no earlier deployment of {model} in {env}"
        history = self.history(model)
        if _healthy(record):
            if record.address:  # and reachable at its address (a router that died restarts)
                router.ensure(model, env, record.address, record.worker, serve.local_api_key(),
                              serve.serve_python())
            history.record(record.version, "rollback", "restored", "it never stopped serving",
                           record.history_fields())
            return f"rolled back: {model} {record.version} still serves at {record.url}"
        if record.alive():  # running but not healthy: replace it
            record.kill()
        settings = serve_settings(self.config, model)
        try:
            verify_manifest(Path(record.adapter_dir), record.digest)
            self.verify_signed(Path(record.adapter_dir), f"{model} {record.version}")
            dep = serve.restart(record, settings)
            activate(dep, settings.drain_timeout_s)  # behind the router, the dead one out
        except StageFailed as exc:
            history.record(record.version, "rollback", "failed", str(exc),
                           record.history_fields())
            return f"rollback to {model} {record.version} failed too: {exc}"
        history.record(record.version, "rollback", "restored", fields=dep.history_fields())
        return f"rolled back: {model} {record.version} restarted at {dep.url}"


def activate(dep: serve.Deployment, drain_s: float) -> serve.Deployment | None:
    """Record `dep` as the environment's deployment and put it behind the model's router;
    take the one it replaces out of the router, let its in-flight requests finish (up to
    `drain_s`), stop it and return it. SIGTERM and SIGINT wait until the switch is done: an
    interruption half-way would leave two servers, or none, recorded."""
    with serve.deferred_signals():
        key = serve.local_api_key()
        front = router.ensure(dep.model, dep.env, dep.address, dep.worker, key,
                              serve.serve_python()) if dep.address else None
        if front is not None:
            dep.address = front.address  # the port it chose, where the setting says 0
        previous = serve.record_started(dep)
        if previous and previous.pid != dep.pid:
            if front is not None and previous.worker != dep.worker:
                router.remove_worker(front, previous.worker, key)
            if previous.alive():
                router.drain(previous.port, key, drain_s)
                previous.kill()
    return previous


def _healthy(dep: serve.Deployment) -> bool:
    try:
        return dep.alive() and httpx.get(f"http://127.0.0.1:{dep.port}/health",
                                         timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
