"""Apply rendered manifests to the configured cluster with kubectl, and wait for the rollout.

A rollout that does not become ready within the timeout is undone (`kubectl rollout undo`:
the previous ReplicaSet, i.e. the previous version and arguments, serves again) and the
command exits 1. Without kubectl or a configured cluster it exits 2 and says where the
rendered manifests are.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from llmops.errors import StageFailed, UsageError


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


def apply_manifests(path: Path, model: str, env: str, timeout_s: int = 1800) -> int:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise UsageError(f"kubectl not found: the manifests for {model} in {env} are in {path};"
                         " install kubectl and configure the cluster (KUBECONFIG), or apply "
                         "them with your own tooling")
    context = subprocess.run([kubectl, "config", "current-context"], capture_output=True,
                             text=True)
    if context.returncode != 0:
        raise UsageError(f"no Kubernetes cluster configured ({context.stderr.strip()}): the "
                         f"manifests are in {path}")
    name, ns = deployment_target(path)
    print(f"applying {path} to context {context.stdout.strip()}", flush=True)
    subprocess.run([kubectl, "apply", "-f", str(path)], check=True)
    status = subprocess.run([kubectl, *ns, "rollout", "status",
                             f"deployment/{name}", f"--timeout={timeout_s}s"])
    if status.returncode != 0:
        subprocess.run([kubectl, *ns, "rollout", "undo", f"deployment/{name}"])
        raise StageFailed(f"deployment/{name} did not become ready within {timeout_s}s; "
                          "rolled back with `kubectl rollout undo`")
    return 0


def rollback_deployment(model: str, env: str) -> int:
    """`kubectl rollout undo` of the model's Deployment in `env` (its previous ReplicaSet)."""
    from llmops.manifests import k8s_name

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise UsageError("kubectl not found: install it and configure the cluster (KUBECONFIG)")
    name = k8s_name(f"{model}-{env}")
    undo = subprocess.run([kubectl, "rollout", "undo", f"deployment/{name}"])
    if undo.returncode != 0:
        raise StageFailed(f"kubectl rollout undo deployment/{name} failed")
    status = subprocess.run([kubectl, "rollout", "status", f"deployment/{name}",
                             "--timeout=1800s"])
    return 0 if status.returncode == 0 else 1
