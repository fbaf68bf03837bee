"""Kubernetes manifests for a vLLM GPU deployment of one registered version.

A Deployment (one pod per replica, `--tensor-parallel-size` = the GPUs of the pod = its
`nvidia.com/gpu` limit), a Service, and a ConfigMap shipping the init container's fetch
module (`llmops.kubernetes.fetch`). The init container downloads the version's files from
the registry's package API with a token from a Secret and checks them with the same
manifest verification as a local deploy before vLLM starts.
Nothing here needs a cluster or registry access: rendering is pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmops.config import HTTP_KEEP_ALIVE_S, GpuTarget
from llmops.errors import UsageError
from llmops.kubernetes.fetch import SHIPPED, shipped_sources
from llmops.kubernetes.plan import Plan
from llmops.serve.vllm import VllmServer
from llmops.serve.vllm import vllm_args as common_vllm_args

VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
FETCH_IMAGE = "python:3.11-slim"
PORT = 8000

@dataclass(frozen=True)
class Release:
    """What is deployed: the model, its version and digest, and the registry's project API."""

    model: str
    version: str
    digest: str
    base_model: str
    registry_api: str
    registry_secret: str = "llmops-registry-token"
    lora_rank: int | None = None  # the adapter's rank, when known (vLLM's --max-lora-rank)


def k8s_name(text: str) -> str:
    """A DNS-1123 name (lowercase alphanumerics and '-', at most 63 characters)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")
    if not name:
        raise UsageError(f"{text!r} cannot be made into a Kubernetes name")
    return name


def vllm_args(release: Release, gpu: GpuTarget, tp: int) -> list[str]:
    """The pod's vLLM arguments: the merged weights, or the base with the adapter as a LoRA
    module, both served under the model's name; tensor-parallel over the pod's GPUs."""
    merged = gpu.serve == "merged"
    server = VllmServer(
        "/models/adapter/merged" if merged else release.base_model,
        release.model if merged else f"{release.model}-base", "0.0.0.0", PORT, gpu.dtype,
        gpu.max_model_len, gpu.max_num_seqs,
        {} if merged else {release.model: "/models/adapter"}, release.lora_rank)
    extras = ["--tensor-parallel-size", str(tp),
              "--gpu-memory-utilization", str(gpu.gpu_memory_utilization)]
    if gpu.quantization:
        extras += ["--quantization", gpu.quantization]
    return common_vllm_args(server, extras)


def render(release: Release, env: str, gpu: GpuTarget, plan: Plan) -> list[dict[str, Any]]:
    """The manifests, as dicts (yaml.safe_dump_all them to apply with kubectl)."""
    if not plan.fits:
        raise UsageError(f"{release.model} does not fit {env}: {plan.explanation}")
    if plan.pipeline_parallel > 1:
        raise UsageError(f"{release.model} needs {plan.pipeline_parallel} nodes (pipeline "
                         "parallel over Ray); multi-node rendering is not built yet")
    name = k8s_name(f"{release.model}-{env}")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "llmops",
              "llmops/model": k8s_name(release.model), "llmops/version": release.version}
    probe = {"httpGet": {"path": "/health", "port": PORT}}
    container = {
        "name": "vllm", "image": VLLM_IMAGE, "args": vllm_args(release, gpu, plan.tensor_parallel),
        "env": [{"name": "VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "value": str(HTTP_KEEP_ALIVE_S)}],
        "ports": [{"containerPort": PORT, "name": "http"}],
        "resources": {"limits": {"nvidia.com/gpu": plan.tensor_parallel}},
        "readinessProbe": {**probe, "periodSeconds": 10},
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 90},
        "volumeMounts": [{"name": "models", "mountPath": "/models"},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    init = {
        "name": "fetch-model", "image": FETCH_IMAGE,
        "command": ["python", "-m", "llmops.kubernetes.fetch"],
        "env": [{"name": "PYTHONPATH", "value": "/scripts"},
                {"name": "REGISTRY_API", "value": release.registry_api},
                {"name": "MODEL", "value": release.model},
                {"name": "VERSION", "value": release.version},
                {"name": "EXPECTED_DIGEST", "value": release.digest},
                {"name": "REGISTRY_TOKEN", "valueFrom": {"secretKeyRef": {
                    "name": release.registry_secret, "key": "token"}}}],
        "volumeMounts": [{"name": "models", "mountPath": "/models"},
                         {"name": "scripts", "mountPath": "/scripts"}],
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                    "prometheus.io/path": "/metrics"}},
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.product": gpu.gpu_type},
                    "initContainers": [init], "containers": [container],
                    "volumes": [{"name": "models", "emptyDir": {}},
                                {"name": "dshm", "emptyDir": {"medium": "Memory",
                                                              "sizeLimit": "16Gi"}},
                                {"name": "scripts", "configMap": {
                                    "name": f"{name}-fetch", "items": [
                                        {"key": key, "path": path}
                                        for key, path in SHIPPED.items()]}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
        "spec": {"selector": {"app.kubernetes.io/name": name},
                 "ports": [{"name": "http", "port": PORT, "targetPort": PORT}]},
    }
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": f"{name}-fetch", "labels": labels},
              "data": shipped_sources()}
    return [config, deployment, service]
