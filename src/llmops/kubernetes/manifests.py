"""Kubernetes manifests for a vLLM GPU deployment of one registered version.

A Deployment (one pod per replica, `--tensor-parallel-size` = the GPUs of the pod = its
`nvidia.com/gpu` limit), a Service, a ConfigMap shipping the init container's fetch
module (`llmops.kubernetes.fetch`), a NetworkPolicy, the autoscaler and PodDisruptionBudget
when configured, and the model's Grafana dashboard. A pod stops gracefully: preStop, then
vLLM drains its in-flight requests (--shutdown-timeout) within the grace period. The init
container downloads the version's files from the registry's package API with a read-only
token from a Secret and checks them with the same manifest verification as a local deploy
before vLLM starts.

The pod is locked down: an API key from a Secret (VLLM_API_KEY), a non-root uid, no
privilege escalation or capabilities, a read-only root filesystem with emptyDirs where
vLLM writes, the runtime's seccomp profile, no service-account token, images pinned by
digest, requests and limits, and ingress only from the configured clients and Prometheus.
The manifests name Secrets, never contain them: the platform team creates them.
Nothing here needs a cluster or registry access: rendering is pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmops.config import HTTP_KEEP_ALIVE_S, GpuTarget
from llmops.config.schema import KubernetesSettings, NetworkPeer, is_hub_id
from llmops.errors import UsageError
from llmops.kubernetes.autoscaling import autoscaler
from llmops.kubernetes.dashboard import dashboard_configmap
from llmops.kubernetes.discovery import PDB_API_VERSIONS, served
from llmops.kubernetes.fetch import (
    SHIPPED,
    TRUST_DIR,
    TRUST_FILE,
    shipped_sources,
    shipped_trust,
    trust_items,
)
from llmops.kubernetes.kubectl import DIGEST_ENV
from llmops.kubernetes.plan import Plan
from llmops.serve.vllm import VllmServer
from llmops.serve.vllm import vllm_args as common_vllm_args
from llmops.signatures import Trusted

PORT = 8000  # the OpenAI API, /health and /metrics: vLLM serves all three on one port
API_KEY_KEY = "api-key"  # the key of the API-key Secret
HOME = "/home/vllm"  # an emptyDir: the image's HOME (/root) is neither ours nor writable

@dataclass(frozen=True)
class Release:
    """What is deployed: the model, its version and digest, and the registry's project API."""

    model: str
    version: str
    digest: str
    base_model: str  # a mounted path, or a Hub id with its revision (`org/name@rev`)
    registry_api: str
    lora_rank: int | None = None  # the adapter's rank, when known (vLLM's --max-lora-rank)

    @property
    def base_and_revision(self) -> tuple[str, str | None]:
        """The base model pods load, and the Hub revision they must load it at."""
        base, _, revision = self.base_model.partition("@")
        if is_hub_id(base) and not revision:
            raise UsageError(f"{self.model}'s base model {base} is a Hub id without a "
                             f"revision: set base_models.{self.model}: {base}@<revision> in "
                             "deploy/<env>.yml")
        return base, revision or None


def k8s_name(text: str) -> str:
    """A DNS-1123 name (lowercase alphanumerics and '-', at most 63 characters)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")
    if not name:
        raise UsageError(f"{text!r} cannot be made into a Kubernetes name")
    return name


def vllm_args(release: Release, gpu: GpuTarget, tp: int, drain_s: int) -> list[str]:
    """The pod's vLLM arguments: the merged weights, or the base with the adapter as a LoRA
    module, both served under the model's name; tensor-parallel over the pod's GPUs; on
    SIGTERM, in-flight requests finish within `drain_s` (vLLM aborts them by default)."""
    merged = gpu.serve == "merged"
    base, revision = (None, None) if merged else release.base_and_revision
    server = VllmServer(
        "/models/adapter/merged" if merged else str(base),
        release.model if merged else f"{release.model}-base", "0.0.0.0", PORT, gpu.dtype,
        gpu.max_model_len, gpu.max_num_seqs,
        {} if merged else {release.model: "/models/adapter"}, release.lora_rank)
    extras = ["--tensor-parallel-size", str(tp),
              "--gpu-memory-utilization", str(gpu.gpu_memory_utilization),
              "--shutdown-timeout", str(drain_s)]
    if gpu.quantization:
        extras += ["--quantization", gpu.quantization]
    if revision:  # the weights and tokenizer of that commit, whatever the branch holds now
        extras += ["--revision", revision, "--tokenizer-revision", revision]
    return common_vllm_args(server, extras)


def container_security() -> dict[str, Any]:
    """Every container's securityContext: no way to gain privileges (setuid binaries,
    capabilities), nothing written outside the emptyDirs mounted for it."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True, "runAsNonRoot": True}


def pod_security(uid: int) -> dict[str, Any]:
    """The pod's securityContext. The vLLM image's user is root, so the uid is set here
    (runAsNonRoot alone would refuse to start it); HOME and USER are set to match."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def peer(selector: NetworkPeer) -> dict[str, Any]:
    """A NetworkPolicy peer from the configured label selectors."""
    out: dict[str, Any] = {}
    if selector.namespace_labels is not None:
        out["namespaceSelector"] = {"matchLabels": dict(selector.namespace_labels)}
    if selector.pod_labels is not None:
        out["podSelector"] = {"matchLabels": dict(selector.pod_labels)}
    return out


def network_policy(name: str, labels: dict[str, str],
                   k8s: KubernetesSettings) -> dict[str, Any]:
    """Ingress to the pods only from the serving clients and Prometheus, only on the vLLM
    port (which also serves /metrics). Egress stays open: the init container reaches the
    registry, and a LoRA pod downloads its base model. The kubelet's probes come from the
    node, which network plugins admit."""
    def port() -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": PORT}]

    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
                 "policyTypes": ["Ingress"],
                 "ingress": [{"from": [peer(c) for c in k8s.clients], "ports": port()},
                             {"from": [peer(k8s.prometheus)], "ports": port()}]},
    }


def disruption_budget(name: str, labels: dict[str, str], replicas: int | None,
                      apis: set[str] | None) -> dict[str, Any]:
    """All but one pod through voluntary disruptions (node drains, upgrades): of a fixed
    count, or (None) of however many the autoscaler runs."""
    allowed = {"minAvailable": replicas - 1} if replicas else {"maxUnavailable": 1}
    return {"apiVersion": served(PDB_API_VERSIONS, apis), "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "labels": labels},
            "spec": {**allowed,
                     "selector": {"matchLabels": {"app.kubernetes.io/name": name}}}}


def graceful_stop(k8s: KubernetesSettings) -> dict[str, Any]:
    """The container's preStop: it keeps serving while the endpoints controller and load
    balancers take it out of rotation, before SIGTERM starts vLLM's drain (the image's
    `sleep`: Kubernetes 1.20 has no sleep action)."""
    if not k8s.termination.pre_stop_s:
        return {}
    return {"lifecycle": {"preStop": {"exec": {
        "command": ["sleep", str(k8s.termination.pre_stop_s)]}}}}


def render(release: Release, env: str, gpu: GpuTarget, plan: Plan,
           k8s: KubernetesSettings, apis: set[str] | None = None,
           trust: list[Trusted] | None = None) -> list[dict[str, Any]]:
    """The manifests, as dicts (yaml.safe_dump_all them to apply with kubectl); `apis`, the
    cluster's API versions (discovery), picks the versions it serves; `trust`, the signers
    whose signature the init container accepts (none: it serves nothing)."""
    if not plan.fits:
        raise UsageError(f"{release.model} does not fit {env}: {plan.explanation}")
    if plan.pipeline_parallel > 1:
        raise UsageError(f"{release.model} needs {plan.pipeline_parallel} nodes (pipeline "
                         "parallel over Ray); multi-node rendering is not built yet")
    if k8s.vllm_image is None:
        raise UsageError(f"deploy/{env}.yml: kubernetes.vllm_image: not set; give vLLM's image "
                         "pinned by digest, vllm/vllm-openai:v<the vLLM of requirements/"
                         "serve.lock>@sha256:<digest> (`docker buildx imagetools inspect "
                         "vllm/vllm-openai:v<version>` prints it): a tag can be moved to "
                         "other content")
    name = k8s_name(f"{release.model}-{env}")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "llmops",
              "llmops/model": k8s_name(release.model), "llmops/version": release.version}
    gpus = plan.tensor_parallel
    memory = f"{k8s.memory_gib_per_gpu * gpus:g}Gi"
    trusted = shipped_trust(trust or [])
    probe = {"httpGet": {"path": "/health", "port": PORT}}  # the one path with no key
    container = {
        "name": "vllm", "image": k8s.vllm_image,
        "args": vllm_args(release, gpu, gpus, k8s.termination.drain_s),
        "env": [{"name": "VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "value": str(HTTP_KEEP_ALIVE_S)},
                # The key of every request but /health (vLLM's --api-key and the
                # llmops_keyguard middleware, from the read-only /scripts).
                {"name": "PYTHONPATH", "value": "/scripts"},
                {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {
                    "name": k8s.api_key_secret or f"{name}-api-key", "key": API_KEY_KEY}}},
                # Caches (~/.cache: Hugging Face, vLLM's compile cache; ~/.triton;
                # ~/.config/vllm) land in the `home` emptyDir.
                {"name": "HOME", "value": HOME},
                # getpass.getuser() (torch's compile cache paths) fails for a uid with no
                # /etc/passwd entry unless USER is set.
                {"name": "USER", "value": "vllm"}],
        "ports": [{"containerPort": PORT, "name": "http", "protocol": "TCP"}],
        # No CPU limit: throttling a server's CPU stalls its GPUs.
        # Quantities are strings: server-side apply checks the typed schema, which a bare
        # integer fails.
        "resources": {"requests": {"cpu": f"{k8s.cpu_per_gpu * gpus:g}", "memory": memory,
                                   "nvidia.com/gpu": str(gpus)},
                      "limits": {"memory": memory, "nvidia.com/gpu": str(gpus)}},
        "securityContext": container_security(),
        "readinessProbe": {**probe, "periodSeconds": 10},
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 90},
        **graceful_stop(k8s),
        "volumeMounts": [{"name": "models", "mountPath": "/models"},
                         {"name": "scripts", "mountPath": "/scripts", "readOnly": True},
                         {"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "home", "mountPath": HOME}],
    }
    init = {
        "name": "fetch-model", "image": k8s.fetch_image,
        "command": [k8s.fetch_python, "-m", "llmops.kubernetes.fetch"],
        "env": [{"name": "PYTHONPATH", "value": "/scripts"},
                {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},  # /scripts is read-only
                {"name": "TRUST_FILE", "value": f"{TRUST_DIR}/{TRUST_FILE}"},
                # Writable homes (the root file system is read-only): Sigstore's trust root
                # is fetched and cached there when a keyless identity is trusted.
                {"name": "HOME", "value": "/tmp"},
                {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
                {"name": "XDG_DATA_HOME", "value": "/tmp/.local/share"},
                {"name": "REGISTRY_API", "value": release.registry_api},
                {"name": "MODEL", "value": release.model},
                {"name": "VERSION", "value": release.version},
                {"name": DIGEST_ENV, "value": release.digest},
                # A read-only token: this pod can read the registry, never write to it.
                {"name": "REGISTRY_TOKEN", "valueFrom": {"secretKeyRef": {
                    "name": k8s.registry_token_secret, "key": k8s.registry_token_key}}}],
        # It holds one file in memory at a time, and weight shards are several GiB.
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": memory}},
        "securityContext": container_security(),
        "volumeMounts": [{"name": "models", "mountPath": "/models"},
                         {"name": "scripts", "mountPath": "/scripts", "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    scaling = k8s.autoscaling
    # An autoscaler owns the count: an applied one would reset it at every deploy.
    replicas = {"replicas": k8s.replicas} if scaling.kind == "none" else {}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            **replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            # No progress this long (weights fetched, vLLM healthy): the rollout fails.
            "progressDeadlineSeconds": k8s.progress_deadline_s,
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                    "prometheus.io/path": "/metrics"}},
                "spec": {
                    "automountServiceAccountToken": False,  # the pod never calls the API
                    # No *_PORT variables of the namespace's Services: a Service named
                    # `vllm` would set VLLM_PORT, which vLLM reads as its own setting.
                    "enableServiceLinks": False,
                    # Outlasts preStop and vLLM's drain: no stream is killed mid-answer.
                    "terminationGracePeriodSeconds": k8s.termination.grace_period_s,
                    "securityContext": pod_security(k8s.run_as_user),
                    "nodeSelector": {"nvidia.com/gpu.product": gpu.gpu_type},
                    "initContainers": [init], "containers": [container],
                    "volumes": [{"name": "models", "emptyDir": {}},
                                {"name": "dshm", "emptyDir": {"medium": "Memory",
                                                              "sizeLimit": "16Gi"}},
                                {"name": "tmp", "emptyDir": {}},
                                {"name": "home", "emptyDir": {}},
                                {"name": "scripts", "configMap": {
                                    "name": f"{name}-fetch", "items": [
                                        *({"key": key, "path": path}
                                          for key, path in SHIPPED.items()),
                                        *trust_items(trusted)]}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
        "spec": {"selector": {"app.kubernetes.io/name": name},
                 # `protocol` is a key of the ports list: server-side apply needs it.
                 "ports": [{"name": "http", "port": PORT, "targetPort": PORT,
                            "protocol": "TCP"}]},
    }
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": f"{name}-fetch", "labels": labels},
              "data": {**shipped_sources(), **trusted}}
    # The NetworkPolicy before the Deployment: `kubectl apply` goes in order, so no pod
    # runs before the policy that guards it.
    docs = [config, network_policy(name, labels, k8s), deployment, service]
    scaler = autoscaler(name, labels, scaling, k8s.namespace, apis)
    if scaler is not None:  # max_replicas > min_replicas (AutoscalingSettings)
        docs += [scaler, disruption_budget(name, labels, None, apis)]
    elif k8s.replicas > 1:
        docs.append(disruption_budget(name, labels, k8s.replicas, apis))
    if k8s.grafana_dashboard:
        docs.append(dashboard_configmap(release.model, name, labels, k8s.namespace))
    if k8s.namespace:
        for doc in docs:
            doc["metadata"]["namespace"] = k8s.namespace
    return docs
