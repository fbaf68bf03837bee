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

    def revisions(self, name: str) -> dict[str, int]:
        """{version: its latest revision} of the Deployment's ReplicaSets."""
        listing = self.get("replicasets") or {"items": []}
        out: dict[str, int] = {}
        for rs in listing["items"]:
            meta = rs["metadata"]
            if not any(o.get("kind") == "Deployment" and o.get("name") == name
                       for o in meta.get("ownerReferences", [])):
                continue
            version = rs["spec"]["template"]["metadata"].get("labels", {}).get(VERSION_LABEL)
            revision = int(meta.get("annotations", {}).get(REVISION, "0"))
            if version and revision > out.get(version, 0):
                out[version] = revision
        return out

    def serving_version(self, name: str) -> str | None:
        """The version the Deployment's pod template runs now (None: no such Deployment)."""
        deployment = self.get(f"deployment/{name}")
        if deployment is None:
            return None
        labels = deployment["spec"]["template"]["metadata"].get("labels", {})
        return str(labels.get(VERSION_LABEL)) if VERSION_LABEL in labels else None

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
