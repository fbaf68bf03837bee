"""kubectl, as the Kubernetes target drives it: discovery, server-side apply, rollout status,
why a rollout is not ready, and undo to a given revision.

Every call names the target's context (`kubernetes.context`, e.g. the GitLab agent's
`group/agents:prod`) and namespace (`kubernetes.namespace`) when deploy/<env>.yml sets them,
else the kubeconfig's current ones. Without kubectl or a configured cluster the calls raise
UsageError (exit 2) and say where the rendered manifests are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.errors import StageFailed, UsageError
from llmops.redact import PIPELINE_SECRETS

FIELD_MANAGER = "llmops"
REVISION = "deployment.kubernetes.io/revision"
VERSION_LABEL = "llmops/version"
# On a ReplicaSet: its version passed verification (when, UTC). The cluster keeps it, so
# a CI job that never saw the deploy (`rollback-production`) finds the previous verified
# version there, not in a job-local history file.
VERIFIED = "llmops/verified-at"
DIGEST_ENV = "EXPECTED_DIGEST"  # the init container's: the version's manifest digest


# What kubectl and the exec credential plugins a kubeconfig names may read; nothing else
# of the pipeline's environment reaches them (its tokens, LD_PRELOAD, PYTHONPATH).
KUBECTL_ENV = frozenset({
    "PATH", "HOME",  # plugins are found on PATH; ~/.kube, ~/.aws, ~/.config/gcloud, ~/.azure
    "KUBECONFIG", "KUBECACHEDIR",  # the cluster and credentials (GitLab CI's agent's too)
    "TMPDIR", "TZ", "LANG",
    "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR",  # a private CA in front of the API server
    "GOOGLE_APPLICATION_CREDENTIALS",  # gke-gcloud-auth-plugin
    "USE_GKE_GCLOUD_AUTH_PLUGIN",
})
KUBECTL_ENV_PREFIXES = (
    "LC_",  # locale
    "KUBECTL_",  # kubectl's own switches (KUBECTL_KUBERC, KUBECTL_COMMAND_HEADERS, ...)
    "AWS_",  # aws eks get-token, aws-iam-authenticator: profile, region, role, web identity
    "CLOUDSDK_",  # gcloud, which gke-gcloud-auth-plugin calls: its config and project
    "AZURE_", "AAD_",  # kubelogin: tenant, client, federated token file
)


def _env(parent: Mapping[str, str] = os.environ,
         passthrough: frozenset[str] = frozenset()) -> dict[str, str]:
    """kubectl's environment, from `parent` (by default this process's): the variables
    kubectl and its cloud auth plugins read (KUBECTL_ENV and its prefixes), and those
    deploy/<env>.yml names in `kubernetes.env_passthrough`; never the pipeline's
    secrets."""
    return {k: v for k, v in parent.items()
            if (k in KUBECTL_ENV or k.startswith(KUBECTL_ENV_PREFIXES) or k in passthrough)
            and k not in PIPELINE_SECRETS}


@dataclass(frozen=True)
class ReplicaSet:
    """One version of a Deployment as the cluster keeps it."""

    name: str
    version: str
    revision: int
    verified_at: str | None  # VERIFIED: None when it never passed verification
    digest: str


def digest_of(template: dict[str, Any]) -> str:
    """The manifest digest a pod template's init container checks ('' if none)."""
    for init in template.get("spec", {}).get("initContainers", []):
        for env in init.get("env", []):
            if env.get("name") == DIGEST_ENV and "value" in env:
                return str(env["value"])
    return ""


def rolled_out(deployment: dict[str, Any]) -> bool:
    """What `kubectl rollout status` waits for: the controller has seen the newest spec,
    every replica is updated and available, no old one is left, and the rollout has not
    exceeded its progress deadline."""
    spec, status = deployment["spec"], deployment.get("status", {})
    wanted = spec.get("replicas", 1)
    if status.get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
        return False
    if any(c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
           for c in status.get("conditions", [])):
        return False
    updated = status.get("updatedReplicas", 0)
    return (updated >= wanted and status.get("replicas", 0) == updated
            and status.get("availableReplicas", 0) >= updated)


@dataclass(frozen=True)
class Kubectl:
    """kubectl bound to one cluster context and namespace, given its own environment
    variables and `env_passthrough` (deploy/<env>.yml's `kubernetes.env_passthrough`)."""

    binary: str
    context: str | None = None
    namespace: str | None = None
    env_passthrough: frozenset[str] = frozenset()

    @classmethod
    def find(cls, what: str, context: str | None = None, namespace: str | None = None,
             env_passthrough: frozenset[str] = frozenset()) -> Kubectl:
        """kubectl, once a cluster is configured (UsageError naming `what` if not)."""
        binary = shutil.which("kubectl")
        if binary is None:
            raise UsageError(f"kubectl not found: {what}; install kubectl and configure the "
                             "cluster (KUBECONFIG), or apply them with your own tooling")
        found = cls(binary, context, namespace, env_passthrough)
        probe = found.run("config", "current-context", namespaced=False)
        if probe.returncode != 0 and context is None:
            raise UsageError(f"no Kubernetes cluster configured ({probe.stderr.strip()}): "
                             f"{what}")
        return found

    def argv(self, *args: str, namespaced: bool = True) -> list[str]:
        out = [self.binary]
        if self.context:
            out += ["--context", self.context]
        if namespaced and self.namespace:
            out += ["--namespace", self.namespace]
        return [*out, *args]

    def run(self, *args: str, namespaced: bool = True,
            timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args, namespaced=namespaced), capture_output=True,
                              text=True, env=_env(passthrough=self.env_passthrough),
                              timeout=timeout)

    def get(self, *args: str) -> dict[str, Any] | None:
        """`kubectl get … -o json`, None when it does not exist."""
        done = self.run("get", *args, "-o", "json")
        if done.returncode != 0:
            if "NotFound" in done.stderr:
                return None
            raise StageFailed(f"kubectl get {' '.join(args)}: {done.stderr.strip()}")
        parsed: dict[str, Any] = json.loads(done.stdout)
        return parsed

    def api_versions(self) -> set[str]:
        """What the API server serves (`kubectl api-versions`: discovery)."""
        done = self.run("api-versions", namespaced=False)
        if done.returncode != 0:
            raise StageFailed(f"kubectl api-versions: {done.stderr.strip()}")
        return set(done.stdout.split())

    def apply(self, path: Path) -> None:
        """Server-side apply of every manifest in `path`, owned by llmops' field manager."""
        done = self.run("apply", "--server-side", f"--field-manager={FIELD_MANAGER}",
                        "--force-conflicts", "-f", str(path))
        if done.returncode != 0:
            raise StageFailed(f"kubectl apply -f {path} failed: {done.stderr.strip()}")

    def prune(self, selector: str, resources: list[str], keep: set[tuple[str, str]]) -> list[str]:
        """Delete the objects of `resources` matching `selector` that are not in `keep`
        ({(kind, name)}): what an earlier render applied and this one no longer has (a
        PodDisruptionBudget after the replicas were lowered to one, which would block
        every node drain; the autoscaler of a kind no longer configured). Server-side apply
        never removes an object. Returns "Kind/name" of each deleted."""
        deleted = []
        for resource in resources:
            listing = self.get(resource, "-l", selector) or {"items": []}
            for item in listing["items"]:
                kind, name = item["kind"], item["metadata"]["name"]
                if (kind, name) in keep:
                    continue
                done = self.run("delete", f"{resource}/{name}", "--ignore-not-found")
                if done.returncode != 0:
                    raise StageFailed(f"kubectl delete {resource}/{name}: "
                                      f"{done.stderr.strip()}")
                deleted.append(f"{kind}/{name}")
        return deleted

    def rollout_status(self, name: str, timeout_s: int) -> tuple[bool, str]:
        """Wait until deployment/`name` is rolled out: (done, kubectl's last words). It
        fails early when the Deployment exceeds its progressDeadlineSeconds."""
        done = self.run("rollout", "status", f"deployment/{name}", f"--timeout={timeout_s}s",
                        timeout=timeout_s + 60)
        said = (done.stderr or done.stdout).strip().splitlines()
        return done.returncode == 0, said[-1] if said else ""

    def settled_after_undo(self, name: str, timeout_s: int,
                           stale_s: float = 60) -> tuple[bool, str]:
        """`rollout status` after an undo. Until the controller has scaled the undone
        ReplicaSet down, the Deployment can still carry the progress-deadline verdict of the
        rollout it undid; that stale verdict is waited out (up to `stale_s`)."""
        deadline = time.monotonic() + stale_s
        while True:
            ready, said = self.rollout_status(name, timeout_s)
            if ready or "exceeded its progress deadline" not in said \
                    or time.monotonic() > deadline:
                return ready, said
            time.sleep(2)

    def undo(self, name: str, revision: int | None = None) -> tuple[bool, str]:
        """Back to `revision` of the Deployment (default: the previous one)."""
        args = ["rollout", "undo", f"deployment/{name}"]
        if revision is not None:
            args.append(f"--to-revision={revision}")
        done = self.run(*args)
        return done.returncode == 0, (done.stderr or done.stdout).strip()

    def replica_sets(self, name: str) -> list[ReplicaSet]:
        """The Deployment's ReplicaSets that carry a version, newest revision first."""
        listing = self.get("replicasets") or {"items": []}
        out = []
        for rs in listing["items"]:
            meta = rs["metadata"]
            if not any(o.get("kind") == "Deployment" and o.get("name") == name
                       for o in meta.get("ownerReferences", [])):
                continue
            template = rs["spec"]["template"]
            version = template["metadata"].get("labels", {}).get(VERSION_LABEL)
            annotations = meta.get("annotations") or {}
            if version:
                out.append(ReplicaSet(meta["name"], str(version),
                                      int(annotations.get(REVISION, "0")),
                                      annotations.get(VERIFIED), digest_of(template)))
        return sorted(out, key=lambda rs: rs.revision, reverse=True)

    def revisions(self, name: str) -> dict[str, int]:
        """{version: its latest revision} of the Deployment's ReplicaSets."""
        out: dict[str, int] = {}
        for rs in reversed(self.replica_sets(name)):
            out[rs.version] = rs.revision
        return out

    def mark_verified(self, name: str, version: str, when: str | None) -> None:
        """Annotate the newest ReplicaSet of `version` as verified at `when` (None: remove
        the mark, after its verification failed)."""
        newest = next((rs for rs in self.replica_sets(name) if rs.version == version), None)
        if newest is None:
            raise StageFailed(f"deployment/{name} has no ReplicaSet of {version}")
        if when is None and newest.verified_at is None:
            return
        mark = f"{VERIFIED}={when}" if when else f"{VERIFIED}-"
        done = self.run("annotate", f"replicaset/{newest.name}", mark, "--overwrite")
        if done.returncode != 0:
            raise StageFailed(f"kubectl annotate replicaset/{newest.name}: "
                              f"{done.stderr.strip()}")

    def unmark_deployment(self, name: str) -> None:
        """`rollout undo` copies a ReplicaSet's annotations to its Deployment, and the
        Deployment's are copied to every ReplicaSet it creates next: without this, a new
        version would be born carrying an older one's verification."""
        deployment = self.get(f"deployment/{name}")
        if deployment is None or VERIFIED not in deployment["metadata"].get("annotations", {}):
            return
        done = self.run("annotate", f"deployment/{name}", f"{VERIFIED}-")
        if done.returncode != 0:
            raise StageFailed(f"kubectl annotate deployment/{name}: {done.stderr.strip()}")

    def serving(self, name: str) -> tuple[str | None, str] | None:
        """(version, digest) of the Deployment's pod template now, in one read (None: no
        such Deployment; a version None: a template without llmops' label)."""
        deployment = self.get(f"deployment/{name}")
        if deployment is None:
            return None
        template = deployment["spec"]["template"]
        labels = template["metadata"].get("labels", {})
        version = str(labels[VERSION_LABEL]) if VERSION_LABEL in labels else None
        return version, digest_of(template)

    def serving_version(self, name: str) -> str | None:
        """The version the Deployment's pod template runs now (None: no such Deployment)."""
        found = self.serving(name)
        return found[0] if found else None

    def settled_version(self, name: str) -> tuple[str, str] | None:
        """(version, digest) once every replica of the Deployment runs its pod template and
        is available; None while a rollout or an undo is unfinished or stuck, or when
        there is no such Deployment."""
        deployment = self.get(f"deployment/{name}")
        if deployment is None or not rolled_out(deployment):
            return None
        template = deployment["spec"]["template"]
        version = template["metadata"].get("labels", {}).get(VERSION_LABEL)
        return (str(version), digest_of(template)) if version else None

    def why_not_ready(self, name: str, selector: str) -> str:
        """What the Deployment and its pods say: the progress condition, the scheduler's
        reason for a pending pod, a pod that is running but not ready."""
        reasons: list[str] = []
        deployment = self.get(f"deployment/{name}")
        for cond in (deployment or {}).get("status", {}).get("conditions", []):
            if cond.get("status") != "True" or cond.get("reason") == "ProgressDeadlineExceeded":
                reasons.append(f"{cond.get('reason')}: {cond.get('message')}")
        pods = self.get("pods", "-l", selector) or {"items": []}
        for pod in pods["items"]:
            pod_name = pod["metadata"]["name"]
            for cond in pod.get("status", {}).get("conditions", []):
                if cond.get("type") == "PodScheduled" and cond.get("status") != "True":
                    reasons.append(f"pod {pod_name} not scheduled: {cond.get('message')}")
                elif cond.get("type") == "Ready" and cond.get("status") != "True" and \
                        pod.get("status", {}).get("phase") == "Running":
                    reasons.append(f"pod {pod_name} is running but not ready")
        return "; ".join(dict.fromkeys(reasons)) or "no reason reported"
