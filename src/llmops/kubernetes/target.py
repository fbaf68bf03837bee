"""The Kubernetes target: render the manifests, apply them, wait for the rollout, undo it.

The engine (`llmops.stages.deployment`) drives it exactly like the local target: a new
version is rolled out (server-side apply, `rollout status` up to the Deployment's progress
deadline), verified against the target's endpoint (`endpoint:` in deploy/<env>.yml, the URL
of its Service or gateway), then recorded; a rollout that never becomes ready, or fails
verification, is undone to the revision of the version that served before
(`kubectl rollout undo --to-revision`), and the history says why (the scheduler's reason
for a pending pod, a pod that never became ready). What serves is read from the cluster:
the Deployment's pod template carries the version and its digest, and each verified
version's ReplicaSet is annotated as such, so a rollback finds the previous verified
version in the cluster (a CI job keeps no history file of the deploys before it).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import yaml

from llmops.config import DeployConfig, ModelSpec, Pin, ServeSettings, load_pins
from llmops.config.paths import state_subdir
from llmops.config.scaling import CanarySettings
from llmops.errors import LlmopsError, StageFailed, UsageError
from llmops.kubernetes.canary import (
    TRACK,
    Breach,
    Inconclusive,
    canary_deployment,
    canary_name,
    run_steps,
)
from llmops.kubernetes.discovery import KEDA_API_VERSIONS
from llmops.kubernetes.kubectl import Kubectl
from llmops.kubernetes.manifests import Release, k8s_name, render
from llmops.kubernetes.plan import ModelShape, Plan, plan_for
from llmops.models.base import ensure_base_model
from llmops.process.activity import activity, tell
from llmops.registry import signing
from llmops.registry.base import ModelVersion, Registry
from llmops.serve.cost import history_fields
from llmops.serve.history import History
from llmops.serve.verify import Verification, run_checks
from llmops.serve.vllm_release import image_problem


@dataclass(frozen=True)
class Rendered:
    """`deploy --render`: the manifests written, nothing applied."""

    path: Path
    objects: int
    explanation: str


@dataclass
class ClusterRollout:
    """A version rolled out to the cluster, and the endpoint that serves it."""

    model: str
    env: str
    version: str
    url: str
    served_name: str
    deployment: str
    digest: str = ""
    previous: str | None = None  # the version that served before (undo goes back to it)

    @property
    def check_url(self) -> str:
        """The Service's endpoint: the rollout is checked where clients call it."""
        return self.url


@dataclass
class KubernetesTarget:
    """`deploy/<env>.yml` with `target: kubernetes`."""

    env: str
    config: DeployConfig
    registry: Registry
    project_api: str | None = None  # the CI project's API (the pods' default registry_api)
    endpoint_key: str | None = None  # LLMOPS_API_KEY: the key in the pods' api-key Secret
    kind = "kubernetes"

    def config_problems(self) -> list[str]:
        """The pods must run the vLLM that evaluates releases, pinned by digest. The
        shipped placeholder digest is not a problem of the file: a fresh fork's merge
        requests pass until a deploy to this target needs the real one (`preflight`)."""
        problem = image_problem(self.config.kubernetes.vllm_image, placeholder_ok=True)
        return [f"kubernetes.vllm_image: {problem}"] if problem else []

    def config_notes(self) -> list[str]:
        return [f"{key}: not deployable yet: {problem}"
                for key, problem in self._deploy_problems()]

    def _deploy_problems(self) -> list[tuple[str, str]]:
        """What a fresh fork's file lacks to deploy, by key: vLLM's real digest, the init
        container's image, the trusted signers' keys."""
        k8s = self.config.kubernetes
        problems = []
        if problem := image_problem(k8s.vllm_image):
            problems.append(("kubernetes.vllm_image", problem))
        if k8s.fetch_image.endswith("@sha256:" + "0" * 64):
            problems.append((
                "kubernetes.fetch_image",
                "the digest is a placeholder (sha256:00000000…): the init container verifies "
                "each version's signature with model-signing, which vLLM's image lacks; give "
                "the CI's pipeline image by digest, $CI_REGISTRY_IMAGE/pipeline@<"
                "LLMOPS_PIPELINE_IMAGE_DIGEST of .gitlab-ci.yml> (docs/operations.md#ci-images)"))
        if problem := signing.trust_problem(self.config.signing):
            problems.append(("signing.trust", problem))
        return problems

    def preflight(self, spec: ModelSpec, version: str) -> None:
        """The images must be pinned by their real digests, and the trusted signers' keys
        present, before anything is applied. The files need no check here: the manifests
        carry the pin's digest (or the registry's) and the trusted keys, which the pods'
        init container enforces on what it fetches."""
        if problems := self._deploy_problems():
            raise UsageError(f"refusing to deploy {spec.name} {version} to {self.env}: "
                             f"deploy/{self.env}.yml: " + "; ".join(
                                 f"{key}: {problem}" for key, problem in problems))

    def api_key_hint(self) -> str:
        return "$LLMOPS_API_KEY"

    def api_key(self) -> str:
        """The key the endpoint requires, for `verify` (the pods read it from a Secret)."""
        if not self.endpoint_key:
            raise UsageError(f"verifying {self.env} needs the endpoint's API key: set "
                             "LLMOPS_API_KEY (a masked CI variable) to the Secret's api-key")
        return self.endpoint_key

    def kubectl(self, what: str) -> Kubectl:
        k8s = self.config.kubernetes
        return Kubectl.find(what, k8s.context, k8s.namespace,
                            frozenset(k8s.env_passthrough))

    def name(self, model: str) -> str:
        return k8s_name(f"{model}-{self.env}")

    def plan(self, spec: ModelSpec) -> tuple[ModelShape, Plan]:
        """How the model is spread over the target's GPUs (tensor/pipeline parallel)."""
        assert self.config.gpu is not None  # DeployConfig requires it for kubernetes
        shape = ModelShape.from_dir(Path(ensure_base_model(spec.base_model)))
        return shape, plan_for(shape, self.config.gpu)

    def render(self, spec: ModelSpec, version: str, out: Path) -> Rendered:
        """Write the version's manifests to `out` (for the newest API versions)."""
        path, docs, plan = self._render(spec, version, self.digest(spec.name, version),
                                        out, None)
        return Rendered(path, len(docs), plan.explanation)

    def _render(self, spec: ModelSpec, version: str, digest: str, out: Path,
                apis: set[str] | None) -> tuple[Path, list[dict[str, Any]], Plan]:
        api = self.config.registry_api or self.project_api
        if api is None:
            raise UsageError(f"deploy/{self.env}.yml: registry_api: not set (nor CI_API_V4_URL)")
        assert self.config.gpu is not None
        _, plan = self.plan(spec)
        base = self.config.base_models.get(spec.name, spec.base_model)
        release = Release(spec.name, version, digest, base, api,
                          lora_rank=spec.axolotl.lora_rank)
        docs = render(release, self.env, self.config.gpu, plan, self.config.kubernetes, apis,
                      signing.trusted(self.config.signing))
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{spec.name}-{self.env}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return path, docs, plan

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

    def rollout_timeout_s(self) -> int:
        # The Deployment fails itself at its progress deadline; this only guards a hang.
        return self.config.kubernetes.progress_deadline_s + 120

    def takes_over(self, spec: ModelSpec, settings: ServeSettings) -> bool:
        """Never: the cluster's pods serve, not a server on the machine that evaluated."""
        return False

    def start(self, spec: ModelSpec, version: str) -> ClusterRollout:
        """Render the version's manifests for what the cluster serves, apply them, wait
        for the rollout (undone if it never becomes ready)."""
        digest = self.digest(spec.name, version)
        out = state_subdir("manifests") / self.env
        url = self.endpoint(spec.name)  # before applying: a rollout that cannot be verified
        try:
            kc = self.kubectl(f"the manifests for {spec.name} in {self.env} are in {out}")
        except UsageError:  # rendered for the newest API versions, for your own tooling
            self._render(spec, version, digest, out, None)
            raise
        apis = kc.api_versions()
        path, docs, _ = self._render(spec, version, digest, out, apis)
        name = self.name(spec.name)
        rollout = ClusterRollout(spec.name, self.env, version, url, spec.name, name, digest,
                                 previous=kc.serving_version(name))
        canary = self.config.kubernetes.canary
        if canary is not None and rollout.previous not in (None, version):
            self.run_canary(kc, spec, rollout, docs, canary, out)
        with activity(f"applying {path}"):
            kc.unmark_deployment(name)
            kc.apply(path)
            self.prune(kc, name, docs, apis)
        self.await_rollout(kc, rollout, "deploy")
        return rollout

    def run_canary(self, kc: Kubectl, spec: ModelSpec, rollout: ClusterRollout,
                   docs: list[dict[str, Any]], cfg: CanarySettings, out: Path) -> None:
        """The new version as a canary beside the current one, step by step; on a breach
        (or metrics that cannot be read) the canary is removed, all traffic is back on the
        current version, the history says why and StageFailed is raised. When every step
        passed, the canary is removed before the Deployment rolls out the new version, so
        that its GPUs are free for the new pods."""
        name, current_version = rollout.deployment, str(rollout.previous)
        stable = next(d for d in docs if d["kind"] == "Deployment")
        current = kc.get(f"deployment/{name}")
        current_pods = int(current["spec"].get("replicas", 1)) if current else 1
        # The canary's pods mount the new version's fetch ConfigMap.
        fetch = [d for d in docs if d["kind"] == "ConfigMap"
                 and d["metadata"]["name"] == f"{name}-fetch"]
        path = out / f"{spec.name}-{self.env}-canary.yaml"

        def apply(pods: int) -> str:
            path.write_text(yaml.safe_dump_all([*fetch, canary_deployment(stable, pods)],
                                               sort_keys=False))
            kc.apply(path)
            ready, said = kc.rollout_status(canary_name(name), self.rollout_timeout_s())
            if ready:
                return ""
            selector = f"app.kubernetes.io/name={name},{TRACK}=canary"
            return f"{said} ({kc.why_not_ready(canary_name(name), selector)})"

        def checks() -> list[str]:
            return run_checks(spec, self.config.verify, rollout.check_url,
                              rollout.served_name, self.api_key())[1]

        def hold(seconds: int, what: str) -> None:
            with activity(what):
                time.sleep(seconds)

        tell(f"canary of {spec.name} {rollout.version} beside {current_version} in "
             f"{self.env}: " + " → ".join(f"{s.share:.0%}" for s in cfg.steps) + " → 100%")
        try:
            run_steps(cfg, name, self.config.kubernetes.namespace, rollout.version,
                      current_version, current_pods, apply, checks, hold, tell)
        except (Breach, Inconclusive, LlmopsError, OSError,
                subprocess.SubprocessError) as exc:  # kubectl timed out
            reason = f"the canary of {rollout.version} failed at {exc}"
            self.history(rollout.model).record(rollout.version, "canary", "failed", reason,
                                               {"deployment": canary_name(name)})
            failed = self.remove_canary(kc, name)
            raise StageFailed(f"{reason}\n" + (failed or "the canary is removed: all "
                                               f"traffic is back on {current_version}")
                              ) from exc
        except BaseException:  # interrupted (Ctrl-C, a cancelled job): no canary left
            self.remove_canary(kc, name)
            raise
        if failed := self.remove_canary(kc, name):
            raise StageFailed(f"every canary step passed, but {failed}")

    def remove_canary(self, kc: Kubectl, name: str) -> str:
        """Delete the canary Deployment (its pods and ReplicaSets with it); '' when done,
        else what failed and what to do."""
        # Foreground: back once its pods are gone (their streams drained), so that their
        # GPUs are free for the new version's pods.
        wait_s = self.config.kubernetes.termination.grace_period_s + 60
        done = kc.run("delete", f"deployment/{canary_name(name)}", "--ignore-not-found",
                      "--cascade=foreground", "--wait=true", f"--timeout={wait_s}s",
                      timeout=wait_s + 30)
        if done.returncode != 0:
            return (f"deleting deployment/{canary_name(name)} failed "
                    f"({done.stderr.strip()}): delete it with kubectl; it serves beside "
                    "the current version until then")
        return ""

    def prune(self, kc: Kubectl, name: str, docs: list[dict[str, Any]],
              apis: set[str]) -> None:
        """Delete what an earlier deploy of the model applied and this render dropped."""
        resources = ["poddisruptionbudgets", "horizontalpodautoscalers", "configmaps"]
        if any(api in apis for api in KEDA_API_VERSIONS):
            resources.append("scaledobjects.keda.sh")
        keep = {(d["kind"], d["metadata"]["name"]) for d in docs}
        selector = f"app.kubernetes.io/name={name},app.kubernetes.io/part-of=llmops"
        if deleted := kc.prune(selector, resources, keep):
            tell(f"removed what deploy/{self.env}.yml no longer renders: "
                 + ", ".join(deleted))

    def await_rollout(self, kc: Kubectl, rollout: ClusterRollout, action: str,
                      after_undo: bool = False) -> None:
        """`rollout status`; a rollout that is not ready by its deadline is undone."""
        name = rollout.deployment
        wait = kc.settled_after_undo if after_undo else kc.rollout_status
        with activity(f"waiting for the rollout of deployment/{name} ({rollout.version})"):
            ready, said = wait(name, self.rollout_timeout_s())
        if not ready:
            why = kc.why_not_ready(name, f"app.kubernetes.io/name={name}")
            raise self.abort(rollout, action, StageFailed(
                f"deployment/{name} ({rollout.version}) did not become ready: {said} ({why})"))

    def serving(self, spec: ModelSpec) -> ClusterRollout:
        """The endpoint, and the version the cluster's Deployment runs."""
        name, url = self.name(spec.name), self.endpoint(spec.name)
        kc = self.kubectl(f"cannot tell what serves {spec.name} in {self.env}")
        version, digest = kc.serving(name) or (None, "")
        if version is None:
            raise UsageError(f"no deployment/{name} in {self.env}'s cluster; deploy it with "
                             f"`llmops deploy {spec.name} --env {self.env}`")
        return ClusterRollout(spec.name, self.env, version, url, spec.name, name,
                              digest)

    def settled(self, spec: ModelSpec) -> ClusterRollout | None:
        """What serves once every replica runs it and is available; None while a rollout or
        an undo is unfinished or stuck (its version is not what serves)."""
        name = self.name(spec.name)
        found = self.kubectl(f"cannot tell what serves {spec.name} in {self.env}") \
            .settled_version(name)
        if found is None:
            return None
        version, digest = found
        return ClusterRollout(spec.name, self.env, version, self.endpoint(spec.name),
                              spec.name, name, digest)

    def commit(self, rollout: ClusterRollout, action: str, checked: Verification) -> None:
        """Verified: its ReplicaSet is marked so in the cluster, and the history says so."""
        try:
            self.kubectl(f"cannot mark {rollout.version} verified").mark_verified(
                rollout.deployment, rollout.version, datetime.now(UTC).isoformat())
        except (LlmopsError, OSError) as exc:
            tell(f"warning: {rollout.model} {rollout.version} serves and passed "
                 f"verification, but marking it so in the cluster failed ({exc}): a later "
                 "`llmops rollback` will not go back to it")
        self.history(rollout.model).record(
            rollout.version, action, "serving",
            reason=f"load: {checked.load}" if checked.load else "",
            fields={"digest": rollout.digest, "deployment": rollout.deployment,
                    **history_fields(self.config, checked.load)})

    def abort(self, rollout: ClusterRollout, action: str, exc: Exception) -> StageFailed:
        """Back to the revision of the version that served before; the history says why."""
        self.history(rollout.model).record(rollout.version, action, "failed", str(exc),
                                           {"deployment": rollout.deployment})
        # A version verified once and failing now is no rollback target any more. Without
        # a ReplicaSet of it (never applied) or a cluster, nothing was marked.
        with contextlib.suppress(LlmopsError, OSError):
            self.kubectl("cannot unmark it").mark_verified(rollout.deployment,
                                                           rollout.version, None)
        return StageFailed(f"{exc}\n{self.undo_to(rollout, rollout.previous)}")

    def undo_to(self, rollout: ClusterRollout, version: str | None) -> str:
        """Roll deployment/<name> back to `version`'s ReplicaSet; say what serves now."""
        name = rollout.deployment
        if version is None or version == rollout.version:
            return (f"nothing to roll back to: no earlier version of {rollout.model} served "
                    f"in {self.env}; deployment/{name} stays as it is")
        try:
            kc = self.kubectl(f"cannot undo deployment/{name}")
            revision = kc.revisions(name).get(version)
            undone, said = kc.undo(name, revision)
            if undone:
                ready, said = kc.settled_after_undo(name, self.rollout_timeout_s())
        except (LlmopsError, OSError) as exc:
            undone, said = False, str(exc)
        if not undone or not ready:
            self.history(rollout.model).record(version, "rollback", "failed", said)
            return f"`kubectl rollout undo deployment/{name}` to {version} failed too: {said}"
        self.history(rollout.model).record(version, "rollback", "restored",
                                           f"undone after {rollout.version} failed",
                                           {"deployment": name, "revision": revision})
        return (f"rolled back with `kubectl rollout undo` (revision {revision}): "
                f"{rollout.model} {version} serves again")

    def start_previous(self, spec: ModelSpec) -> ClusterRollout:
        """`kubectl rollout undo` to the revision of the previous verified version (not
        merely the previous revision, which may be a rollout that failed), and wait. The
        cluster says which: the newest ReplicaSet of another version marked verified."""
        current = self.serving(spec)
        name = current.deployment
        kc = self.kubectl(f"cannot roll back deployment/{name}")
        kept = kc.replica_sets(name)
        previous = next((rs for rs in kept
                         if rs.verified_at and rs.version != current.version), None)
        if previous is None:
            older = sorted({rs.version for rs in kept} - {current.version})
            raise UsageError(
                f"no earlier verified version of {spec.name} in {self.env}'s cluster to roll "
                f"back to (deployment/{name} keeps ReplicaSets of "
                f"{', '.join(older) or 'no other version'}, none verified; older ones are "
                "gone with revisionHistoryLimit); deploy one with `llmops deploy "
                f"{spec.name} --env {self.env} --version <version>`")
        version, revision = previous.version, previous.revision
        tell(f"rolling back {spec.name} in {self.env}: {current.version} → {version} "
             f"(revision {revision}, verified {previous.verified_at})")
        rollout = ClusterRollout(spec.name, self.env, version, current.url, spec.name,
                                 name, previous.digest, previous=current.version)
        undone, said = kc.undo(name, revision)
        if not undone:
            raise StageFailed(f"kubectl rollout undo deployment/{name} "
                              f"--to-revision={revision} failed: {said}")
        self.await_rollout(kc, rollout, "rollback", after_undo=True)
        return rollout

    def stop(self, spec: ModelSpec) -> NoReturn:
        name = self.name(spec.name)
        raise UsageError(f"llmops does not stop {spec.name} in {self.env}'s cluster: scale or "
                         f"delete deployment/{name} with kubectl (namespace "
                         f"{self.config.kubernetes.namespace}), as the platform team decides")

    def history(self, model: str) -> History:
        return History(model, self.env)
