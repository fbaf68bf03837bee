"""A canary on Kubernetes: the new version served beside the current one behind the same
Service, on a growing share of the pods, judged at each step on what Prometheus measured.

The canary is a second Deployment, `<name>-canary`, whose pods carry the Service's
selector label (`app.kubernetes.io/name: <name>`) and `llmops/track: canary`, which its
own selector adds: the Service sends it its share of the requests, and the current
Deployment (selector without the track) never adopts its pods or ReplicaSets, which the
canary Deployment owns. A share is a share of pods, so of requests (the Service balances
connections over ready pods); whole pods give the nearest share at or above the one asked.

At each step, after its hold, the canary must pass the verify checks against the Service
and compare with the current version over the hold's window: its 5xx share, its TTFT p99
and its request latency p99 (vLLM's metrics, labelled per version by
deploy/monitoring/scrape-config.yml). A breach, too few canary requests, or a Prometheus
that cannot be read fails the canary: "inconclusive" is never "passed".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from llmops.config.scaling import CanarySettings
from llmops.kubernetes.promql import INFERENCE_ROUTES as API
from llmops.kubernetes.promql import selector

TRACK = "llmops/track"


def canary_name(name: str) -> str:
    return f"{name}-canary"


def canary_deployment(stable: dict[str, Any], replicas: int) -> dict[str, Any]:
    """The rendered Deployment of the new version, as the canary beside `stable`'s name."""
    doc = copy.deepcopy(stable)
    meta, spec = doc["metadata"], doc["spec"]
    meta["name"] = canary_name(meta["name"])
    meta["labels"] = {**meta["labels"], TRACK: "canary"}
    spec["replicas"] = replicas
    spec["selector"]["matchLabels"] = {**spec["selector"]["matchLabels"], TRACK: "canary"}
    spec["template"]["metadata"]["labels"] = {**spec["template"]["metadata"]["labels"],
                                              TRACK: "canary"}
    return doc


def canary_replicas(share: float, current: int) -> int:
    """The fewest canary pods beside `current` pods that serve at least `share`."""
    return max(1, math.ceil(share * current / (1 - share) - 1e-9))


@dataclass(frozen=True)
class VersionMetrics:
    """One version over a step's window, as Prometheus measured it (None: no series)."""

    requests: float
    error_ratio: float | None
    ttft_p99_s: float | None
    latency_p99_s: float | None

    def line(self) -> str:
        def s(v: float | None, fmt: str) -> str:
            return "n/a" if v is None else format(v, fmt)
        return (f"{self.requests:.0f} requests, errors {s(self.error_ratio, '.1%')}, TTFT p99 "
                f"{s(self.ttft_p99_s, '.3f')} s, latency p99 {s(self.latency_p99_s, '.3f')} s")


class Inconclusive(Exception):
    """The metrics could not be read or are too few to judge."""


def queries(name: str, namespace: str | None, version: str, window_s: int) -> dict[str, str]:
    """The PromQL of one version's metrics over the last `window_s` seconds."""
    pods = selector(name, namespace, f'llmops_version="{version}"')
    api = selector(name, namespace, f'llmops_version="{version}"', API)
    errors = selector(name, namespace, f'llmops_version="{version}"', API, 'status="5xx"')
    w = f"[{window_s}s]"

    def p99(histogram: str) -> str:
        return (f"histogram_quantile(0.99, sum by (le) "
                f"(rate({histogram}_bucket{pods}{w})))")
    return {"requests": f"sum(increase(http_requests_total{api}{w}))",
            "errors": f"sum(increase(http_requests_total{errors}{w}))",
            "ttft_p99_s": p99("vllm:time_to_first_token_seconds"),
            "latency_p99_s": p99("vllm:e2e_request_latency_seconds")}


@dataclass(frozen=True)
class Prometheus:
    """Prometheus' HTTP API: one instant query at a time."""

    url: str
    timeout_s: float

    def value(self, query: str) -> float | None:
        """The query's single value now (None: no series, or NaN); Inconclusive when
        Prometheus cannot be reached or refuses the query."""
        try:
            reply = httpx.get(f"{self.url.rstrip('/')}/api/v1/query", params={"query": query},
                              timeout=self.timeout_s)
            body = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Inconclusive(f"Prometheus at {self.url} could not be read "
                               f"({type(exc).__name__}: {exc})") from exc
        if reply.status_code != 200 or body.get("status") != "success":
            raise Inconclusive(f"Prometheus at {self.url} refused `{query}`: HTTP "
                               f"{reply.status_code} {body.get('error', '')}".rstrip())
        result = body["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    def version(self, name: str, namespace: str | None, version: str,
                window_s: int) -> VersionMetrics:
        got = {k: self.value(q) for k, q in queries(name, namespace, version,
                                                     window_s).items()}
        requests = got["requests"] or 0.0
        errors = got["errors"] or 0.0  # a version that never failed has no 5xx series
        return VersionMetrics(requests, errors / requests if requests else None,
                              got["ttft_p99_s"], got["latency_p99_s"])


def judge(canary: VersionMetrics, current: VersionMetrics,
          cfg: CanarySettings) -> list[str]:
    """What the canary breaches against the current version ([]: it passes); Inconclusive
    when there is too little to judge."""
    if canary.requests < cfg.min_requests:
        raise Inconclusive(f"only {canary.requests:.0f} canary requests in the window "
                           f"(min_requests {cfg.min_requests}): not enough to judge")
    breaches = []
    baseline = current.error_ratio or 0.0
    if (canary.error_ratio or 0.0) > baseline + cfg.max_error_rate_increase:
        breaches.append(f"error rate {canary.error_ratio:.1%} against {baseline:.1%} "
                        f"(at most {cfg.max_error_rate_increase:.0%} points more)")
    for what, key, ratio in (("TTFT p99", "ttft_p99_s", cfg.max_ttft_p99_ratio),
                             ("latency p99", "latency_p99_s", cfg.max_latency_p99_ratio)):
        mine, theirs = getattr(canary, key), getattr(current, key)
        if mine is None:
            raise Inconclusive(f"no {what} of the canary in Prometheus: are its pods scraped "
                               "(deploy/monitoring/scrape-config.yml)?")
        if theirs and mine > ratio * theirs:
            breaches.append(f"{what} {mine:.3f} s against {theirs:.3f} s "
                            f"(at most {ratio:g}x)")
    return breaches


@dataclass(frozen=True)
class Step:
    """What one step did."""

    number: int
    canary_pods: int
    current_pods: int
    canary: VersionMetrics
    current: VersionMetrics

    @property
    def share(self) -> float:
        return self.canary_pods / (self.canary_pods + self.current_pods)


def step_line(step: Step, of: int, version: str, current_version: str) -> str:
    return (f"canary step {step.number}/{of} passed: {version} on {step.canary_pods} of "
            f"{step.canary_pods + step.current_pods} pods ({step.share:.0%}): "
            f"{step.canary.line()}; {current_version}: {step.current.line()}")


ApplyCanary = Callable[[int], str]  # canary pods -> "" once ready, else why not
Checks = Callable[[], list[str]]  # the verify checks' problems


def run_steps(cfg: CanarySettings, name: str, namespace: str | None, version: str,
              current_version: str, current_pods: int, apply: ApplyCanary, checks: Checks,
              hold: Callable[[int, str], None], said: Callable[[str], None]) -> list[Step]:
    """Every step in order; raises Breach (or Inconclusive) at the first that fails."""
    prometheus = Prometheus(cfg.prometheus_url, cfg.query_timeout_s)
    done: list[Step] = []
    for number, step in enumerate(cfg.steps, start=1):
        pods = canary_replicas(step.share, current_pods)
        where = (f"step {number}/{len(cfg.steps)} ({pods} of {pods + current_pods} pods, "
                 f"{pods / (pods + current_pods):.0%})")
        if why := apply(pods):
            raise Breach(f"{where}: the canary's pods did not become ready: {why}")
        hold(step.hold_s, f"canary {where}: {version} beside {current_version} for "
             f"{step.hold_s} s")
        if problems := checks():
            raise Breach(f"{where}: verify: " + "; ".join(problems))
        try:
            canary = prometheus.version(name, namespace, version, step.hold_s)
            current = prometheus.version(name, namespace, current_version, step.hold_s)
            breaches = judge(canary, current, cfg)
        except Inconclusive as exc:
            raise Inconclusive(f"{where}: inconclusive, so not passed: {exc}") from exc
        if breaches:
            raise Breach(f"{where}: " + "; ".join(breaches) + f" ({version}: "
                         f"{canary.line()}; {current_version}: {current.line()})")
        done.append(Step(number, pods, current_pods, canary, current))
        said(step_line(done[-1], len(cfg.steps), version, current_version))
    return done


class Breach(Exception):
    """The canary did worse than the current version, or failed its checks."""
