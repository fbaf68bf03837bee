"""Autoscaling, graceful termination and monitoring of a Kubernetes target, as rendered.

The HPA (Prometheus adapter's custom metrics) or KEDA ScaledObject on vLLM's queue and
KV-cache metrics, in the API versions the cluster serves; the PodDisruptionBudget; the pod's
preStop, vLLM's drain and the grace period; the model's Grafana dashboard; and the files of
deploy/monitoring/ agreeing with the renderer and with the vLLM that serves (its metric
names). The API server's verdict is tests/e2e/test_kubernetes_autoscaling.py's; promtool's
and Grafana's schema's are tests/e2e/test_monitoring.py's.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from llmops.config import DeployConfig, GpuTarget
from llmops.config.schema import KubernetesSettings
from llmops.errors import UsageError
from llmops.kubernetes.autoscaling import KV_CACHE, WAITING, quantity
from llmops.kubernetes.dashboard import dashboard
from llmops.kubernetes.manifests import Release, render
from llmops.kubernetes.plan import GpuBudget, ModelShape, plan
from llmops.kubernetes.promql import selector
from llmops.serve.process import serve_python

Doc = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
RELEASE = Release("support-bot", "1.4.0", "sha256:abc", "/mnt/models/base",
                  "https://gitlab.example/api/v4/projects/7")
IMAGE = "vllm/vllm-openai:v0.32.0@sha256:" + "0" * 64
SHAPE = ModelShape(params=135_000_000, layers=30, hidden=576, heads=9, kv_heads=3,
                   head_dim=64)
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
KUBE_1_20 = {"v1", "apps/v1", "autoscaling/v1", "autoscaling/v2beta1", "autoscaling/v2beta2",
             "policy/v1beta1"}
ADAPTER = "custom.metrics.k8s.io/v1beta1"


def settings(**kw: Any) -> KubernetesSettings:
    return KubernetesSettings.model_validate({"vllm_image": IMAGE, **kw})


def rendered(k8s: KubernetesSettings, apis: set[str] | None = None) -> list[Doc]:
    g = GpuTarget(gpu_type="nvidia-a100-80gb", gpu_memory_gib=80, gpus_per_node=1)
    p = plan(SHAPE, GpuBudget(80, 1, 1, max_model_len=g.max_model_len,
                              max_num_seqs=g.max_num_seqs))
    return render(RELEASE, "production", g, p, k8s, apis)


def one(docs: list[Doc], kind: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


HPA = {"kind": "hpa", "min_replicas": 2, "max_replicas": 5}
KEDA = {"kind": "keda", "min_replicas": 1, "max_replicas": 4, "prometheus_url": PROMETHEUS}


@pytest.mark.parametrize(("given", "error"), [
    ({"kind": "hpa", "min_replicas": 3, "max_replicas": 2},
     r"max_replicas \(2\) is below min_replicas \(3\)"),
    ({"kind": "hpa", "min_replicas": 2, "max_replicas": 2}, "has nothing to scale"),
    ({"kind": "hpa"}, "has nothing to scale"),  # max_replicas forgotten (default 1)
    ({"kind": "keda", "max_replicas": 3}, "kind keda needs prometheus_url"),
    ({**KEDA, "prometheus_url": "prometheus:9090"}, "is not an http"),
    ({**HPA, "kv_cache_usage": 1.5}, "less than or equal to 1"),
    ({**HPA, "kind": "vpa"}, "'none', 'hpa' or 'keda'"),
    ({**HPA, "targets": 3}, "Extra inputs are not permitted"),
])
def test_autoscaling_settings_are_checked(given: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        settings(autoscaling=given)


def test_a_fixed_count_and_an_autoscaler_are_refused_together() -> None:
    """The autoscaler owns the count; a configured one is refused, naming the fix."""
    with pytest.raises(ValidationError, match="replicas and autoscaling .kind hpa. are both "
                                              "set.*remove replicas"):
        settings(replicas=2, autoscaling=HPA)
    settings(replicas=2)  # a fixed count alone is fine
    assert settings(autoscaling=HPA).autoscaling.max_replicas == 5


def test_an_autoscaled_deployment_leaves_its_count_to_the_autoscaler() -> None:
    fixed = one(rendered(settings(replicas=3)), "Deployment")
    assert fixed["spec"]["replicas"] == 3
    for scaling in (HPA, KEDA):
        docs = rendered(settings(autoscaling=scaling))
        assert "replicas" not in one(docs, "Deployment")["spec"]
        budget = one(docs, "PodDisruptionBudget")["spec"]
        # All but one pod through drains, of whatever count runs.
        assert budget == {"maxUnavailable": 1, "selector": {"matchLabels": {
            "app.kubernetes.io/name": "support-bot-production"}}}


def test_the_hpa_follows_vllm_s_queue_and_kv_cache_through_the_custom_metrics_api() -> None:
    hpa = one(rendered(settings(autoscaling={**HPA, "waiting_per_replica": 3,
                                             "kv_cache_usage": 0.75})), "HorizontalPodAutoscaler")
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "support-bot-production"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 5)
    assert [(m["type"], m["pods"]["metric"]["name"], m["pods"]["target"]) for m in
            spec["metrics"]] == [
        ("Pods", "vllm:num_requests_waiting", {"type": "AverageValue", "averageValue": "3000m"}),
        ("Pods", "vllm:kv_cache_usage_perc", {"type": "AverageValue", "averageValue": "750m"})]
    assert spec["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 600,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}
    assert quantity(0.8) == "800m" and quantity(4) == "4000m"


def test_the_keda_scaled_object_queries_the_deployment_s_pods() -> None:
    k8s = settings(autoscaling={**KEDA, "polling_interval_s": 30}, namespace="serving")
    scaled = one(rendered(k8s), "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["namespace"] == "serving"
    spec = scaled["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["pollingInterval"]) == \
        (1, 4, 30)
    pods = '{namespace="serving",app_kubernetes_io_name="support-bot-production"}'
    assert spec["triggers"] == [
        {"type": "prometheus", "metricType": "AverageValue", "metadata": {
            "serverAddress": PROMETHEUS, "query": f"sum(vllm:num_requests_waiting{pods})",
            "threshold": "4"}},
        {"type": "prometheus", "metricType": "Value", "metadata": {
            "serverAddress": PROMETHEUS, "query": f"avg(vllm:kv_cache_usage_perc{pods})",
            "threshold": "0.8"}}]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"] == 600


def test_api_versions_come_from_the_cluster_s_discovery() -> None:
    """Kubernetes 1.20 serves autoscaling/v2beta2 and policy/v1beta1; current clusters v2
    and policy/v1; without a cluster (--render), the newest."""
    old = rendered(settings(autoscaling=HPA), KUBE_1_20 | {ADAPTER})
    assert one(old, "HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2beta2"
    assert one(old, "PodDisruptionBudget")["apiVersion"] == "policy/v1beta1"
    new = rendered(settings(autoscaling=HPA), {"autoscaling/v2", "autoscaling/v2beta2",
                                               "policy/v1", ADAPTER})
    assert one(new, "HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2"
    assert one(new, "PodDisruptionBudget")["apiVersion"] == "policy/v1"
    assert one(rendered(settings(autoscaling=HPA)), "HorizontalPodAutoscaler")[
        "apiVersion"] == "autoscaling/v2"


def test_an_autoscaler_the_cluster_cannot_run_is_refused_before_anything_is_applied() -> None:
    with pytest.raises(UsageError, match="no custom metrics API: the HPA could never read "
                                         "vLLM's metrics; install the Prometheus adapter"):
        rendered(settings(autoscaling=HPA), KUBE_1_20)
    with pytest.raises(UsageError, match="KEDA is not installed in the cluster"):
        rendered(settings(autoscaling=KEDA), KUBE_1_20)
    rendered(settings(autoscaling=KEDA), KUBE_1_20 | {"keda.sh/v1alpha1"})


def test_a_pod_stops_only_after_its_in_flight_requests_finish() -> None:
    """preStop keeps it serving while it leaves the Service, vLLM drains on SIGTERM, and
    the grace period outlasts both (else the kubelet kills a stream mid-answer)."""
    docs = rendered(settings(termination={"pre_stop_s": 15, "drain_s": 300}))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    vllm = pod["containers"][0]
    assert vllm["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "15"]}}}
    args = vllm["args"]
    assert args[args.index("--shutdown-timeout") + 1] == "300"
    assert pod["terminationGracePeriodSeconds"] == 15 + 300 + 30
    # No preStop asked: none rendered, the drain and its grace period stay.
    pod = one(rendered(settings(termination={"pre_stop_s": 0})), "Deployment")["spec"][
        "template"]["spec"]
    assert "lifecycle" not in pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] == 120 + 30


def test_the_cost_of_an_autoscaled_target_counts_its_fewest_pods() -> None:
    config = DeployConfig.model_validate({
        "target": "kubernetes", "gpu": {"gpu_type": "x", "gpu_memory_gib": 80,
                                        "gpus_per_node": 2},
        "kubernetes": {"autoscaling": HPA}})
    assert config.serving_devices() == ("gpu", 2 * 2)


def test_the_dashboard_shows_each_version_of_the_deployment_s_pods() -> None:
    docs = rendered(settings(namespace="serving"))
    config = [d for d in docs if d["kind"] == "ConfigMap"][-1]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["namespace"] == "serving"
    board = json.loads(config["data"]["support-bot-production.json"])
    assert board == dashboard("support-bot", "support-bot-production", "serving")
    assert len(board["uid"]) <= 40  # Grafana's limit
    titles = {p["title"]: p for p in board["panels"]}
    for wanted in ("Requests per second, by version", "Share of traffic, by version",
                   "Time to first token", "Request latency", "Requests waiting and running",
                   "KV-cache usage", "Error rate, by version", "Generated tokens per second"):
        assert wanted in titles, wanted
    pods = selector("support-bot-production", "serving")
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert pods[:-1] in target["expr"], target["expr"]  # these pods only
    assert "llmops_version" in titles["Share of traffic, by version"]["targets"][0]["expr"]
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    assert "ConfigMap" not in [d["kind"] for d in rendered(settings(
        grafana_dashboard=False))][1:]


def vllm_metrics() -> set[str]:
    """The series names the serving environment's vLLM exposes (counters with _total,
    histograms with _bucket), read from its source: no import, no server."""
    try:
        python = serve_python()
    except UsageError:
        pytest.skip("no serving environment (.venv-serve)")
    where = subprocess.run([str(python), "-c", "import importlib.util as u; "
                            "print(u.find_spec('vllm').submodule_search_locations[0])"],
                           capture_output=True, text=True, check=True, timeout=60)
    source = (Path(where.stdout.strip()) / "v1" / "metrics" / "loggers.py").read_text()
    suffix = {"gauge": [""], "counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {name + s for kind, name in re.findall(
        r'self\._(gauge|counter|histogram)_cls\(\s*name="(vllm:[a-z0-9_]+)"', source)
        for s in suffix[kind]}


def used_metrics(text: str) -> set[str]:
    return set(re.findall(r"vllm:[a-z0-9_]+", text))


def test_every_vllm_metric_used_is_one_the_serving_vllm_exposes() -> None:
    """A renamed metric would leave the autoscaler blind and the alerts silent."""
    exposed = vllm_metrics()
    assert {WAITING, KV_CACHE} <= exposed
    docs = rendered(settings(autoscaling=KEDA))
    used = used_metrics(json.dumps(docs)) | used_metrics(json.dumps(rendered(settings(
        autoscaling=HPA)))) | used_metrics((MONITORING / "alerts.yml").read_text())
    used |= used_metrics((MONITORING / "prometheus-adapter.yml").read_text())
    assert used - exposed == set()
    assert len(used) >= 6


def test_the_adapter_serves_the_metrics_the_hpa_asks_for() -> None:
    rules = yaml.safe_load((MONITORING / "prometheus-adapter.yml").read_text())["rules"]
    served = {r["name"]["as"] for r in rules}
    hpa = one(rendered(settings(autoscaling=HPA)), "HorizontalPodAutoscaler")
    assert {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]} == served
    for rule in rules:  # per pod, so that the HPA's Pods metrics find their series
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                                  "pod": {"resource": "pod"}}
        assert re.fullmatch(rule["name"]["matches"], rule["name"]["as"])


def test_the_scrape_config_sets_every_label_the_queries_select_on() -> None:
    [job] = yaml.safe_load((MONITORING / "scrape-config.yml").read_text())
    labels = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    board = json.dumps(dashboard("m", "m-prod", "serving"))
    texts = [board, (MONITORING / "alerts.yml").read_text(),
             json.dumps(rendered(settings(autoscaling=KEDA, namespace="serving")))]
    selected = {label for text in texts
                for label in re.findall(r"\b(namespace|pod|app_kubernetes_io_name|"
                                        r"llmops_[a-z]+)\b(?=\s*(?:[!=]~?|,|\)))", text)}
    assert selected - labels == set()
    assert {"namespace", "app_kubernetes_io_name", "llmops_version"} <= selected
