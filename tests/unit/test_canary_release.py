"""The canary's pure parts: how many pods give a share, the canary Deployment beside the
current one, and the verdict on two versions' metrics (a breach, a pass, or too little to
judge, which is never a pass). Against a real Prometheus and cluster: tests/e2e."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from llmops.config.scaling import CanarySettings
from llmops.kubernetes.canary import (
    Inconclusive,
    VersionMetrics,
    canary_deployment,
    canary_replicas,
    judge,
)

CFG = CanarySettings(steps=[{"share": 0.1, "hold_s": 60}, {"share": 0.5, "hold_s": 60}],
                     prometheus_url="http://prometheus:9090")
GOOD = VersionMetrics(requests=400, error_ratio=0.0, ttft_p99_s=0.5, latency_p99_s=4.0)


@pytest.mark.parametrize(("share", "current", "pods"), [
    (0.1, 1, 1),   # one pod beside one is 50%: whole pods give at least the share
    (0.1, 9, 1),   # 1 of 10
    (0.1, 10, 2),  # 1 of 11 would be 9%
    (0.5, 3, 3),
    (0.25, 3, 1),
])
def test_whole_pods_give_at_least_the_share(share: float, current: int, pods: int) -> None:
    assert canary_replicas(share, current) == pods
    assert pods / (pods + current) >= share


def test_the_canary_shares_the_services_label_but_never_the_current_selector() -> None:
    labels = {"app.kubernetes.io/name": "bot-prod", "llmops/version": "1.1.0"}
    stable: dict[str, Any] = {
        "kind": "Deployment", "metadata": {"name": "bot-prod", "labels": dict(labels)},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app.kubernetes.io/name":
                                                             "bot-prod"}},
                 "template": {"metadata": {"labels": dict(labels)}, "spec": {}}}}
    canary = canary_deployment(stable, 1)
    assert canary["metadata"]["name"] == "bot-prod-canary"
    assert canary["spec"]["replicas"] == 1
    pod = canary["spec"]["template"]["metadata"]["labels"]
    assert pod["app.kubernetes.io/name"] == "bot-prod"  # the Service selects it
    assert canary["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "bot-prod",
                                                         "llmops/track": "canary"}
    assert stable["spec"]["template"]["metadata"]["labels"] == labels  # left as it was


def test_a_canary_as_good_as_the_current_version_passes() -> None:
    assert judge(GOOD, GOOD, CFG) == []


@pytest.mark.parametrize(("canary", "breach"), [
    (VersionMetrics(400, 0.05, 0.5, 4.0), "error rate 5.0% against 0.0%"),
    (VersionMetrics(400, 0.0, 0.9, 4.0), "TTFT p99 0.900 s against 0.500 s"),
    (VersionMetrics(400, 0.0, 0.5, 6.5), "latency p99 6.500 s against 4.000 s"),
])
def test_a_canary_worse_than_the_current_version_breaches(canary: VersionMetrics,
                                                          breach: str) -> None:
    [said] = judge(canary, GOOD, CFG)
    assert said.startswith(breach), said


def test_errors_are_judged_against_the_current_versions_own() -> None:
    current = VersionMetrics(400, 0.04, 0.5, 4.0)
    assert judge(VersionMetrics(400, 0.05, 0.5, 4.0), current, CFG) == []


@pytest.mark.parametrize(("canary", "why"), [
    (VersionMetrics(3, 0.0, 0.5, 4.0), "only 3 canary requests"),
    (VersionMetrics(400, 0.0, None, 4.0), "no TTFT p99 of the canary"),
])
def test_too_little_to_judge_is_inconclusive_never_a_pass(canary: VersionMetrics,
                                                          why: str) -> None:
    with pytest.raises(Inconclusive, match=why):
        judge(canary, GOOD, CFG)


def test_a_current_version_without_traffic_is_compared_on_errors_only() -> None:
    idle = VersionMetrics(0, None, None, None)
    assert judge(GOOD, idle, CFG) == []
    assert judge(VersionMetrics(400, 0.1, 0.5, 4.0), idle, CFG)


def test_the_steps_must_grow() -> None:
    with pytest.raises(ValidationError, match="must increase"):
        CanarySettings(steps=[{"share": 0.5, "hold_s": 1}, {"share": 0.1, "hold_s": 1}],
                       prometheus_url="http://p:9090")
    with pytest.raises(ValidationError, match="less than 1"):
        CanarySettings(steps=[{"share": 1.0, "hold_s": 1}], prometheus_url="http://p:9090")


def test_kubectl_timing_out_during_a_canary_fails_the_deploy_and_removes_the_canary(
        repo_copy: Any, tmp_path: Any) -> None:
    """Whatever stops a step (here kubectl hanging past its timeout) ends as a failed
    deploy that says why, with the canary deleted, never as a traceback."""
    import subprocess

    from llmops.config import load_model
    from llmops.config.settings import Settings
    from llmops.errors import StageFailed
    from llmops.kubernetes.target import ClusterRollout
    from llmops.stages import deployment
    from llmops.stages.context import Context

    class HangingKubectl:
        def __init__(self) -> None:
            self.ran: list[tuple[str, ...]] = []

        def get(self, what: str) -> dict[str, Any]:
            return {"spec": {"replicas": 1}}

        def apply(self, path: Any) -> None:
            raise subprocess.TimeoutExpired("kubectl apply", 120)

        def run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
            self.ran.append(args)
            return subprocess.CompletedProcess(list(args), 0, "", "")

    target = deployment.target_for("staging", Context(Settings()))
    kc = HangingKubectl()
    rollout = ClusterRollout("tiny", "staging", "0.2.0", "http://127.0.0.1:9/v1", "tiny",
                             "tiny-staging", "sha256:x", previous="0.1.0")
    stable = {"kind": "Deployment", "metadata": {"name": "tiny-staging", "labels": {}},
              "spec": {"selector": {"matchLabels": {}}, "template": {"metadata": {
                  "labels": {}}}}}
    with pytest.raises(StageFailed, match="timed out") as failed:
        target.run_canary(kc, load_model("tiny"), rollout, [stable], CFG,  # type: ignore[arg-type]
                          tmp_path)
    assert "all traffic is back on 0.1.0" in str(failed.value)
    assert kc.ran and kc.ran[-1][:2] == ("delete", "deployment/tiny-staging-canary")
    [event] = target.history("tiny").read()
    assert (event["version"], event["action"], event["result"]) == ("0.2.0", "canary", "failed")
