"""The autoscaler of a model's Deployment, on vLLM's own load signals.

vLLM exports the requests waiting for a batch slot (`vllm:num_requests_waiting`) and the
share of KV-cache blocks in use (`vllm:kv_cache_usage_perc`); either growing means the pods
are full, before latency shows it. GPU utilisation does not: a saturated engine and a busy
one both read 100%.

Two renderings of one policy (deploy/<env>.yml `kubernetes.autoscaling`):
- `hpa`: a HorizontalPodAutoscaler on Pods metrics of the custom metrics API, which the
  Prometheus adapter serves with the rules of deploy/monitoring/prometheus-adapter.yml;
- `keda`: a KEDA ScaledObject whose Prometheus triggers query the same series.
Both remove one pod at a time after `scale_down_window_s` of low load. Rendering is pure.
"""

from __future__ import annotations

from typing import Any

from llmops.config.scaling import AutoscalingSettings
from llmops.kubernetes.discovery import (
    CUSTOM_METRICS_APIS,
    HPA_API_VERSIONS,
    KEDA_API_VERSIONS,
    served,
)
from llmops.kubernetes.promql import selector

WAITING = "vllm:num_requests_waiting"
KV_CACHE = "vllm:kv_cache_usage_perc"
ADAPTER_RULES = "deploy/monitoring/prometheus-adapter.yml"


def quantity(value: float) -> str:
    """A Kubernetes quantity in thousandths ("800m" for 0.8), exact for any target given."""
    return f"{round(value * 1000)}m"


def behavior(a: AutoscalingSettings) -> dict[str, Any]:
    """Scale down one pod per minute once load stayed low for the window; scale up as
    Kubernetes does by default (a queue must not wait for a window)."""
    return {"scaleDown": {"stabilizationWindowSeconds": a.scale_down_window_s,
                          "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}


def horizontal_autoscaler(name: str, labels: dict[str, str], a: AutoscalingSettings,
                          apis: set[str] | None) -> dict[str, Any]:
    """An HPA on the pods' average queue and KV-cache use (custom metrics API)."""
    served(CUSTOM_METRICS_APIS, apis, "no custom metrics API: the HPA could never read "
           f"vLLM's metrics; install the Prometheus adapter with the rules of {ADAPTER_RULES}"
           ", or set kubernetes.autoscaling.kind: keda")

    def pods(metric: str, target: float) -> dict[str, Any]:
        return {"type": "Pods", "pods": {"metric": {"name": metric}, "target": {
            "type": "AverageValue", "averageValue": quantity(target)}}}

    return {"apiVersion": served(HPA_API_VERSIONS, apis), "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "labels": labels},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": name},
                     "minReplicas": a.min_replicas, "maxReplicas": a.max_replicas,
                     "metrics": [pods(WAITING, a.waiting_per_replica),
                                 pods(KV_CACHE, a.kv_cache_usage)],
                     "behavior": behavior(a)}}


def scaled_object(name: str, labels: dict[str, str], a: AutoscalingSettings,
                  namespace: str | None, apis: set[str] | None) -> dict[str, Any]:
    """A KEDA ScaledObject: the queue summed over the pods, held at `waiting_per_replica`
    per pod (AverageValue), and the pods' mean KV-cache use held at `kv_cache_usage`."""
    version = served(KEDA_API_VERSIONS, apis, "KEDA is not installed in the cluster "
                     "(https://keda.sh/docs/deploy/), or set kubernetes.autoscaling.kind: hpa")
    assert a.prometheus_url is not None  # AutoscalingSettings requires it for keda
    matchers = selector(name, namespace)

    def trigger(query: str, threshold: float, metric_type: str) -> dict[str, Any]:
        return {"type": "prometheus", "metricType": metric_type,
                "metadata": {"serverAddress": a.prometheus_url, "query": query,
                             "threshold": f"{threshold:g}"}}

    return {"apiVersion": version, "kind": "ScaledObject",
            "metadata": {"name": name, "labels": labels},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": name},
                     "minReplicaCount": a.min_replicas, "maxReplicaCount": a.max_replicas,
                     "pollingInterval": a.polling_interval_s,
                     "advanced": {"horizontalPodAutoscalerConfig": {
                         "behavior": behavior(a)}},
                     "triggers": [
                         trigger(f"sum({WAITING}{matchers})", a.waiting_per_replica,
                                 "AverageValue"),
                         trigger(f"avg({KV_CACHE}{matchers})", a.kv_cache_usage, "Value")]}}


def autoscaler(name: str, labels: dict[str, str], a: AutoscalingSettings,
               namespace: str | None, apis: set[str] | None) -> dict[str, Any] | None:
    """The configured autoscaler of deployment/`name`, or None for a fixed replica count."""
    if a.kind == "hpa":
        return horizontal_autoscaler(name, labels, a, apis)
    if a.kind == "keda":
        return scaled_object(name, labels, a, namespace, apis)
    return None
