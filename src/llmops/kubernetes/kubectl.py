"""kubectl, as the Kubernetes target drives it: apply, rollout status, rollout undo.

Without kubectl or a configured cluster the calls raise UsageError (exit 2) and say where the
rendered manifests are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from llmops.errors import UsageError
from llmops.redact import PIPELINE_SECRETS

FIELD_MANAGER = "llmops"


def _env() -> dict[str, str]:
    """kubectl's environment: its own credentials (a kubeconfig, a cloud's auth plugin
    variables) but none of the pipeline's."""
    return {k: v for k, v in os.environ.items() if k not in PIPELINE_SECRETS}


def deployment_target(path: Path) -> tuple[str, list[str]]:
    """The rendered Deployment's name, and the `-n` arguments that reach it: its own
    namespace if the manifest names one, else none, so that `rollout status` and `undo`
    look where `kubectl apply` put it (the context's namespace, not always `default`)."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Deployment":
            meta = doc["metadata"]
            namespace = meta.get("namespace")
            return str(meta["name"]), ["-n", str(namespace)] if namespace else []
    raise UsageError(f"{path}: no Deployment among the rendered manifests")


def kubectl(what: str) -> str:
    """The kubectl binary, once a cluster is configured (UsageError naming `what` if not)."""
    binary = shutil.which("kubectl")
    if binary is None:
        raise UsageError(f"kubectl not found: {what}; install kubectl and configure the "
                         "cluster (KUBECONFIG), or apply them with your own tooling")
    context = subprocess.run([binary, "config", "current-context"], capture_output=True,
                             text=True, env=_env())
    if context.returncode != 0:
        raise UsageError(f"no Kubernetes cluster configured ({context.stderr.strip()}): "
                         f"{what}")
    return binary


def apply(binary: str, path: Path) -> None:
    """Server-side apply of every manifest in `path`, owned by llmops' field manager."""
    subprocess.run([binary, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}",
                    "--force-conflicts", "-f", str(path)], check=True, env=_env())


def rollout_status(binary: str, name: str, ns: list[str], timeout_s: int) -> bool:
    """Wait until deployment/`name` is rolled out; False when it is not within the time."""
    done = subprocess.run([binary, *ns, "rollout", "status", f"deployment/{name}",
                           f"--timeout={timeout_s}s"], env=_env())
    return done.returncode == 0


def rollout_undo(binary: str, name: str, ns: list[str]) -> bool:
    """Back to the Deployment's previous ReplicaSet (previous version and arguments)."""
    return subprocess.run([binary, *ns, "rollout", "undo", f"deployment/{name}"],
                          env=_env()).returncode == 0
