"""The local target: vLLM CPU servers on 127.0.0.1, started beside the serving one.

A new version's server starts while the previous one keeps serving. Verified (by the engine,
`llmops.stages.deployment`): the new server becomes the environment's record and the previous
one is stopped. Failed (files that do not match the manifest, a server that never becomes
healthy, a failed check): the new server is stopped and the recorded deployment serves again,
restarted with its own recorded arguments if it is not running. Every outcome is appended to
the environment's history (`llmops history`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llmops.compute import serve_settings
from llmops.config import DeployConfig, ModelSpec
from llmops.config.paths import state_subdir
from llmops.digests import verify_manifest
from llmops.errors import StageFailed, UsageError
from llmops.models.base import ensure_base_model
from llmops.process import activity
from llmops.registry.base import Registry
from llmops.serve import process as serve
from llmops.serve.cost import history_fields
from llmops.serve.verify import Verification


@dataclass
class LocalTarget:
    """`deploy/<env>.yml` with `target: local`."""

    env: str
    config: DeployConfig
    registry: Registry
    kind = "local"

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
            base = ensure_base_model(mv.base_model or spec.base_model)
            return serve.start(spec.name, self.env, mv.version, base, files, settings,
                               digest=mv.digest)
        except StageFailed as exc:
            raise self.failed(spec.name, mv.version, "deploy", exc) from exc

    def serving(self, spec: ModelSpec) -> serve.Deployment:
        serve.reap_orphans()
        dep = serve.load_record(spec.name, self.env)
        if dep is None:
            raise UsageError(f"no deployment of {spec.name} in {self.env}; see `llmops status`")
        return dep

    def commit(self, dep: serve.Deployment, action: str, checked: Verification) -> None:
        """Verified: the new server becomes the record; the one it replaces is stopped."""
        serve.activate(dep)
        serve.record_event(dep.model, dep.env, dep.version, action, "serving",
                           reason=f"load: {checked.load}" if checked.load else "", dep=dep,
                           extra=history_fields(self.config, checked.load))

    def abort(self, dep: serve.Deployment, action: str, exc: Exception) -> StageFailed:
        """Verification failed: stop the new server; the recorded one serves again."""
        dep.kill()
        return self.failed(dep.model, dep.version, action, exc, dep)

    def start_previous(self, spec: ModelSpec) -> serve.Deployment:
        """Start the previous verified version again, with its recorded arguments."""
        serve.reap_orphans()
        settings = serve_settings(self.config, spec.name)
        current = serve.load_record(spec.name, self.env)
        event = previous_good(serve.read_history(spec.name, self.env),
                              current.version if current else None)
        if event is None:
            raise UsageError(f"no earlier verified deployment of {spec.name} in {self.env} to "
                             f"roll back to; see {serve.history_path(spec.name, self.env)}")
        adapter_dir = Path(str(event["adapter_dir"]))
        if not adapter_dir.is_dir():
            raise UsageError(f"{adapter_dir} (files of {event['version']}) is gone: deploy it "
                             f"again with `llmops deploy {spec.name} --env {self.env} "
                             f"--version {event['version']}`")
        verify_manifest(adapter_dir, str(event.get("digest", "")))
        record = serve.Deployment(spec.name, self.env, str(event["version"]), spec.name,
                                  str(event["base_model"]), str(adapter_dir), 0, 0,
                                  list(event["args"]), "", digest=str(event.get("digest", "")))
        activity.tell(f"rolling back {spec.name} in {self.env}: "
                      f"{current.version if current else 'nothing'} → {record.version}")
        try:
            return serve.restart(record, settings)
        except StageFailed as exc:
            raise self.failed(spec.name, record.version, "rollback", exc) from exc

    def history(self, model: str) -> list[dict[str, Any]]:
        return serve.read_history(model, self.env)

    def api_key(self) -> str:
        return serve.local_api_key()

    def failed(self, model: str, version: str, action: str, exc: Exception,
               dep: serve.Deployment | None = None) -> StageFailed:
        serve.record_event(model, self.env, version, action, "failed", str(exc), dep)
        return StageFailed(f"{exc}\n{self.restore(model)}")

    def restore(self, model: str) -> str:
        """Make the environment's recorded deployment serve; say what serves now."""
        env = self.env
        record = serve.load_record(model, env)
        if record is None:
            return f"nothing to roll back to: no earlier deployment of {model} in {env}"
        if _healthy(record):
            serve.record_event(model, env, record.version, "rollback", "restored",
                               "it never stopped serving", record)
            return f"rolled back: {model} {record.version} still serves at {record.url}"
        if record.alive():  # running but not healthy: replace it
            record.kill()
        try:
            verify_manifest(Path(record.adapter_dir), record.digest)
            dep = serve.restart(record, serve_settings(self.config, model))
        except StageFailed as exc:
            serve.record_event(model, env, record.version, "rollback", "failed", str(exc),
                               record)
            return f"rollback to {model} {record.version} failed too: {exc}"
        serve.save_record(dep)
        serve.record_event(model, env, record.version, "rollback", "restored", dep=dep)
        return f"rolled back: {model} {record.version} restarted at {dep.url}"


def _healthy(dep: serve.Deployment) -> bool:
    try:
        return dep.alive() and httpx.get(f"http://127.0.0.1:{dep.port}/health",
                                         timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def previous_good(history: list[dict[str, Any]], current: str | None,
                  need_args: bool = True) -> dict[str, Any] | None:
    """The latest history entry that served (and was verified) a version other than the
    current one; with `need_args`, one that recorded the arguments it ran with."""
    for event in reversed(history):
        if event.get("result") == "serving" and event.get("version") != current \
                and (event.get("args") or not need_args):
            return event
    return None
