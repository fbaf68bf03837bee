"""The Kubernetes target: render the manifests, apply them, wait for the rollout, undo it.

The engine (`llmops.stages.deployment`) drives it exactly like the local target: a new
version is rolled out, verified against the target's endpoint (`endpoint:` in
deploy/<env>.yml, the URL of its Service or gateway), then recorded; a rollout that never
becomes ready, or fails verification, is undone (`kubectl rollout undo`), so the previous
ReplicaSet serves. Every outcome is appended to the environment's history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmops.config import DeployConfig, ModelSpec, Pin, load_pins
from llmops.config.paths import state_subdir
from llmops.errors import LlmopsError, StageFailed, UsageError
from llmops.kubernetes import kubectl
from llmops.kubernetes.manifests import Release, k8s_name, render
from llmops.kubernetes.plan import ModelShape, Plan, plan_for
from llmops.models.base import ensure_base_model
from llmops.process.activity import activity
from llmops.registry.base import ModelVersion, Registry
from llmops.serve.process import read_history, record_event
from llmops.serve.target import previous_good
from llmops.serve.verify import Verification

ROLLOUT_TIMEOUT_S = 1800


@dataclass
class ClusterRollout:
    """A version rolled out to the cluster, and the endpoint that serves it."""

    model: str
    env: str
    version: str
    url: str
    served_name: str
    deployment: str
    namespace: list[str] = field(default_factory=list)
    digest: str = ""


@dataclass
class KubernetesTarget:
    """`deploy/<env>.yml` with `target: kubernetes`."""

    env: str
    config: DeployConfig
    registry: Registry
    project_api: str | None = None  # the CI project's API (the pods' default registry_api)
    endpoint_key: str | None = None  # LLMOPS_API_KEY: the key in the pods' api-key Secret
    kind = "kubernetes"

    def api_key(self) -> str:
        """The key the endpoint requires, for `verify` (the pods read it from a Secret)."""
        if not self.endpoint_key:
            raise UsageError(f"verifying {self.env} needs the endpoint's API key: set "
                             "LLMOPS_API_KEY (a masked CI variable) to the Secret's api-key")
        return self.endpoint_key

    def plan(self, spec: ModelSpec) -> tuple[ModelShape, Plan]:
        """How the model is spread over the target's GPUs (tensor/pipeline parallel)."""
        assert self.config.gpu is not None  # DeployConfig requires it for kubernetes
        shape = ModelShape.from_dir(Path(ensure_base_model(spec.base_model)))
        return shape, plan_for(shape, self.config.gpu)

    def render(self, spec: ModelSpec, version: str, out: Path) -> tuple[Path, int, Plan]:
        """Write the version's manifests to `out`: (file, number of objects, plan)."""
        return self._render(spec, version, self.digest(spec.name, version), out)

    def _render(self, spec: ModelSpec, version: str, digest: str,
                out: Path) -> tuple[Path, int, Plan]:
        api = self.config.registry_api or self.project_api
        if api is None:
            raise UsageError(f"deploy/{self.env}.yml: registry_api: not set (nor CI_API_V4_URL)")
        assert self.config.gpu is not None
        _, plan = self.plan(spec)
        base = self.config.base_models.get(spec.name, spec.base_model)
        release = Release(spec.name, version, digest, base, api,
                          lora_rank=spec.axolotl.lora_rank)
        docs = render(release, self.env, self.config.gpu, plan, self.config.kubernetes)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{spec.name}-{self.env}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return path, len(docs), plan

    def digest(self, model: str, version: str) -> str:
        """The version's manifest digest: from the pin, else from the registry."""
        pin: Pin | ModelVersion | None = load_pins(self.env).models.get(model)
        if pin is None or pin.version != version:
            try:  # not pinned (a tag pipeline's staging deploy): the registry has its digest
                pin = self.registry.get(model, version)
            except LlmopsError as exc:
                raise UsageError(f"{model} {version} is not pinned in registry/{self.env}.yml "
                                 f"and the registry cannot say its digest: {exc}") from exc
        return pin.digest

    def endpoint(self, model: str) -> str:
        if not self.config.endpoint:
            raise UsageError(f"deploy/{self.env}.yml: endpoint: not set; give the URL of the "
                             f"Service or gateway that serves {model} (…/v1) to verify it")
        return self.config.endpoint.rstrip("/")

    def start(self, spec: ModelSpec, version: str) -> ClusterRollout:
        """Render and apply the version's manifests; wait for the rollout (undone if it
        never becomes ready)."""
        digest = self.digest(spec.name, version)
        path, _, _ = self._render(spec, version, digest, state_subdir("manifests") / self.env)
        binary = kubectl.kubectl(f"the manifests for {spec.name} in {self.env} are in {path}")
        url = self.endpoint(spec.name)  # before applying: a rollout that cannot be verified
        name, ns = kubectl.deployment_target(path)
        with activity(f"applying {path}"):
            kubectl.apply(binary, path)
        rollout = ClusterRollout(spec.name, self.env, version, url, spec.name, name, ns, digest)
        with activity(f"waiting for the rollout of {ns}/{name}"):
            ready = kubectl.rollout_status(binary, name, ns, ROLLOUT_TIMEOUT_S)
        if not ready:
            raise self.abort(rollout, "deploy", StageFailed(
                f"deployment/{name} did not become ready within {ROLLOUT_TIMEOUT_S}s"))
        return rollout

    def serving(self, spec: ModelSpec) -> ClusterRollout:
        """The endpoint, and the version the history says serves there."""
        served = [e for e in self.history(spec.name) if e.get("result") in ("serving",
                                                                             "restored")]
        version = str(served[-1]["version"]) if served else "unknown"
        return ClusterRollout(spec.name, self.env, version, self.endpoint(spec.name),
                              spec.name, k8s_name(f"{spec.name}-{self.env}"))

    def commit(self, rollout: ClusterRollout, action: str, checked: Verification) -> None:
        record_event(rollout.model, self.env, rollout.version, action, "serving",
                     reason=f"load: {checked.load}" if checked.load else "",
                     extra={"digest": rollout.digest, "deployment": rollout.deployment})

    def abort(self, rollout: ClusterRollout, action: str, exc: Exception) -> StageFailed:
        """`kubectl rollout undo`: the previous ReplicaSet serves again."""
        binary = kubectl.kubectl("cannot undo the rollout")
        undone = kubectl.rollout_undo(binary, rollout.deployment, rollout.namespace)
        record_event(rollout.model, self.env, rollout.version, action, "failed", str(exc))
        now = ("rolled back with `kubectl rollout undo`: the previous ReplicaSet serves"
               if undone else f"`kubectl rollout undo deployment/{rollout.deployment}` "
               "failed too")
        return StageFailed(f"{exc}\n{now}")

    def start_previous(self, spec: ModelSpec) -> ClusterRollout:
        """`kubectl rollout undo` to the previous revision, and wait for it."""
        current = self.serving(spec)
        event = previous_good(self.history(spec.name), current.version, need_args=False)
        name = current.deployment
        binary = kubectl.kubectl(f"cannot roll back deployment/{name}")
        print(f"rolling back {spec.name} in {self.env}: {current.version} → "
              f"{event['version'] if event else 'the previous revision'}", flush=True)
        if not kubectl.rollout_undo(binary, name, current.namespace):
            raise StageFailed(f"kubectl rollout undo deployment/{name} failed")
        if not kubectl.rollout_status(binary, name, current.namespace, ROLLOUT_TIMEOUT_S):
            raise StageFailed(f"deployment/{name} did not become ready after the undo")
        return ClusterRollout(spec.name, self.env, str(event["version"]) if event else
                              "previous", current.url, spec.name, name, current.namespace,
                              str(event.get("digest", "")) if event else "")

    def history(self, model: str) -> list[dict[str, Any]]:
        return read_history(model, self.env)
