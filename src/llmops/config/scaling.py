"""deploy/<env>.yml `kubernetes.autoscaling` and `kubernetes.termination`: how many pods serve a
model as load changes, and how a pod stops without cutting the streams it is answering."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from llmops.config.strict import Strict

URL = re.compile(r"https?://[^\s/]+(/\S*)?")


class AutoscalingSettings(Strict):
    """Replicas that follow vLLM's own load signals: requests waiting for a batch slot
    (vllm:num_requests_waiting) and the share of KV-cache blocks in use
    (vllm:kv_cache_usage_perc), read from Prometheus. GPU pods start in minutes, so they
    are added on queueing, before latency grows, and removed slowly."""

    kind: Literal["none", "hpa", "keda"] = Field(
        default="none", description="none: kubernetes.replicas pods; hpa: a "
        "HorizontalPodAutoscaler on the Prometheus adapter's custom metrics API "
        "(custom.metrics.k8s.io, with deploy/monitoring/prometheus-adapter.yml's rules); "
        "keda: a KEDA ScaledObject with Prometheus triggers (KEDA installed in the "
        "cluster). The API versions rendered are those the cluster serves.")
    min_replicas: int = Field(default=1, ge=1, description="Fewest pods (never zero: a cold "
                              "start of a GPU pod takes minutes).")
    max_replicas: int = Field(default=1, ge=1, description="Most pods: the GPUs the "
                              "environment may hold for this model.")
    waiting_per_replica: float = Field(
        default=4, gt=0, description="Target of requests waiting per pod (average of "
        "vllm:num_requests_waiting); more adds pods.")
    kv_cache_usage: float = Field(
        default=0.8, gt=0, le=1, description="Target share of KV-cache blocks in use per "
        "pod (average of vllm:kv_cache_usage_perc, 0-1); more adds pods.")
    scale_down_window_s: int = Field(
        default=600, ge=0, le=3600, description="Load must have stayed low this long before "
        "a pod is removed (one at a time): a brief lull does not cost a GPU pod that takes "
        "minutes to come back.")
    prometheus_url: str | None = Field(
        default=None, description="KEDA: the Prometheus its triggers query, e.g. "
        "http://prometheus-operated.monitoring.svc:9090 (required for keda).")
    polling_interval_s: int = Field(default=15, ge=5, le=300,
                                    description="KEDA: seconds between two queries.")

    @model_validator(mode="after")
    def _coherent(self) -> AutoscalingSettings:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas "
                             f"({self.min_replicas}): raise max_replicas")
        if self.kind != "none" and self.max_replicas == self.min_replicas:
            raise ValueError(f"kind {self.kind} with max_replicas = min_replicas "
                             f"({self.min_replicas}) has nothing to scale: raise max_replicas, "
                             "or set kind none and kubernetes.replicas")
        if self.kind == "keda" and self.prometheus_url is None:
            raise ValueError("kind keda needs prometheus_url: the Prometheus KEDA's triggers "
                             "query (e.g. http://prometheus-operated.monitoring.svc:9090)")
        if self.prometheus_url is not None and not URL.fullmatch(self.prometheus_url):
            raise ValueError(f"prometheus_url {self.prometheus_url!r} is not an http(s) URL")
        return self


# What a pod needs between its last stream and being killed: vLLM's engine and API server to
# exit, its GPU memory freed.
EXIT_MARGIN_S = 30


class TerminationSettings(Strict):
    """How a pod stops (rollout, scale-down, node drain) with its in-flight streams finished:
    preStop waits while the endpoints controller and load balancers stop sending it new
    requests; then SIGTERM, on which vLLM (--shutdown-timeout) finishes what it serves; the
    grace period outlasts both, so the kubelet never kills a stream."""

    pre_stop_s: int = Field(
        default=10, ge=0, le=120, description="Seconds the pod keeps serving after it is "
        "taken out of its Service, before vLLM is told to stop (new requests stop arriving).")
    drain_s: int = Field(
        default=120, ge=0, le=3600, description="vLLM's --shutdown-timeout: seconds in-flight "
        "requests may take to finish after SIGTERM (0: they are aborted). Longer than the "
        "longest answer you serve.")

    @property
    def grace_period_s(self) -> int:
        """The pod's terminationGracePeriodSeconds: preStop, the drain and the exit."""
        return self.pre_stop_s + self.drain_s + EXIT_MARGIN_S


class CanaryStep(Strict):
    """One step of a canary: the new version's share of the pods behind the Service (so of
    the requests), held this long before its metrics are judged."""

    share: float = Field(gt=0, lt=1, description="The canary's share of the pods behind "
                         "the Service, 0-1 exclusive (100% is the promotion that follows the "
                         "last step). Pods are whole: the share served is the nearest one "
                         "at or above it that whole pods give, and is printed.")
    hold_s: int = Field(ge=1, le=86400, description="Seconds the step serves before its "
                        "metrics (over these seconds) are read from Prometheus.")


class CanarySettings(Strict):
    """A new version beside the current one behind the same Service, in steps; at each step
    the two versions' error rate and TTFT and latency p99 are read from Prometheus and the
    verify checks run. A breach, or metrics that cannot be read, sends all traffic back to
    the current version and fails the deploy."""

    steps: list[CanaryStep] = Field(min_length=1, description="The canary's shares, in "
                                    "increasing order, e.g. [{share: 0.1, hold_s: 300}, "
                                    "{share: 0.5, hold_s: 300}]; then it is promoted to all pods.")
    prometheus_url: str = Field(description="The Prometheus that scrapes the pods with "
                                "deploy/monitoring/scrape-config.yml's labels, as this job "
                                "reaches it, e.g. http://prometheus-operated.monitoring.svc:9090.")
    max_error_rate_increase: float = Field(
        default=0.02, ge=0, le=1, description="Breach: the canary's share of 5xx answers "
        "exceeds the current version's by more than this (0.02: two points).")
    max_ttft_p99_ratio: float = Field(
        default=1.5, ge=1, description="Breach: the canary's p99 time to first token is more "
        "than this times the current version's.")
    max_latency_p99_ratio: float = Field(
        default=1.5, ge=1, description="Breach: the canary's p99 request latency is more than "
        "this times the current version's.")
    min_requests: int = Field(
        default=20, ge=1, description="Fewer canary requests than this in a step's window: "
        "inconclusive, which fails the canary like a breach (never passed on no evidence).")
    query_timeout_s: float = Field(default=10, gt=0, le=120,
                                   description="Timeout of each Prometheus query.")

    @model_validator(mode="after")
    def _increasing(self) -> CanarySettings:
        shares = [s.share for s in self.steps]
        if shares != sorted(set(shares)):
            raise ValueError(f"steps: shares {shares} must increase step by step")
        if not URL.fullmatch(self.prometheus_url):
            raise ValueError(f"prometheus_url {self.prometheus_url!r} is not an http(s) URL")
        return self
