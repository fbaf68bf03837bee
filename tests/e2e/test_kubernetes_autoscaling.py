"""Autoscaled deployments in a real Kubernetes 1.20 control plane (tests/k8s_sim, the
session's cluster): the API server accepts what llmops renders for it, and its controllers
act on it.

Rendered by the product's `render` for the API versions the cluster's discovery lists (an
HPA in autoscaling/v2beta2, budgets in policy/v1beta1 on 1.20) and applied with the target's
own server-side apply: an HPA on the custom metrics API and a KEDA ScaledObject, each with
its PodDisruptionBudget, the NetworkPolicy, the dashboard's ConfigMap and a Deployment that
stops gracefully. KEDA's ScaledObject CRD (scripts/k8s-sim/keda-crd.sh) is installed, not
KEDA's operator; the Prometheus adapter's APIService is registered as its chart registers it,
with no adapter behind it. So the HPA controller enforces the minimum and reports that it
cannot read vLLM's metric yet. No vLLM starts: pods are simulated.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.config import GpuTarget
from llmops.config.schema import KubernetesSettings
from llmops.kubernetes.kubectl import Kubectl
from llmops.kubernetes.manifests import Release, render
from llmops.kubernetes.plan import GpuBudget, ModelShape, plan

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "llmops-autoscaling"
IMAGE = "vllm/vllm-openai:v0.32.0@sha256:" + "ab" * 32  # never pulled: no runtime here
RELEASE = Release("tiny", "0.1.0", "sha256:abc", "/mnt/models/base",
                  "http://gitlab.invalid/api/v4/projects/1")
SHAPE = ModelShape(params=135_000_000, layers=30, hidden=576, heads=9, kv_heads=3,
                   head_dim=64)
# What prometheus-adapter's chart registers: the custom metrics API, served by its Service.
ADAPTER_API = {
    "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
    "metadata": {"name": "v1beta1.custom.metrics.k8s.io"},
    "spec": {"group": "custom.metrics.k8s.io", "version": "v1beta1",
             "service": {"name": "prometheus-adapter", "namespace": "monitoring"},
             "groupPriorityMinimum": 100, "versionPriority": 100,
             "insecureSkipTLSVerify": True}}
SCALING = {"hpa": {"kind": "hpa", "min_replicas": 2, "max_replicas": 3},
           "keda": {"kind": "keda", "min_replicas": 1, "max_replicas": 3,
                    "prometheus_url": "http://prometheus-operated.monitoring.svc:9090"}}


def keda_crd() -> Path:
    done = subprocess.run(["bash", str(REPO / "scripts" / "k8s-sim" / "keda-crd.sh")],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail("KEDA's CRD could not be made (run `bash scripts/setup-ci-tools.sh`):\n"
                    + done.stderr[-2000:])
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster(k8s_cluster: Any, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Any]:
    """The session's cluster with KEDA's CRD and the adapter's APIService, a namespace of
    this module's, and KUBECONFIG pointing the target's kubectl at it."""
    k8s_cluster.kubectl("apply", "-f", str(keda_crd()))
    k8s_cluster.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                        "crd/scaledobjects.keda.sh")
    k8s_cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(ADAPTER_API))
    k8s_cluster.namespace(NAMESPACE)
    k8s_cluster.keep_unready()  # the session's cluster: no other test's rule applies here
    monkeypatch_module.setenv("KUBECONFIG", str(k8s_cluster.kubeconfig))
    try:
        yield k8s_cluster
    finally:
        # The cluster is the session's: give its GPUs back, and unregister an API nothing
        # serves (namespace deletion waits on the discovery of every group).
        k8s_cluster.kubectl("-n", NAMESPACE, "delete", "deployments", "--all", "--wait=true",
                            "--timeout=120s", check=False)
        k8s_cluster.kubectl("delete", "apiservice", "v1beta1.custom.metrics.k8s.io",
                            check=False)
        k8s_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def apply(cluster: Any, kind: str, out: Path) -> list[dict[str, Any]]:
    """Render `tiny-<kind>` for what the cluster serves and apply it as `deploy` does."""
    kc = Kubectl(str(cluster.bin / "kubectl"), namespace=NAMESPACE)
    k8s = KubernetesSettings.model_validate({"vllm_image": IMAGE, "namespace": NAMESPACE,
                                             "autoscaling": SCALING[kind]})
    gpu = GpuTarget(gpu_type="nvidia-a100-80gb", gpu_memory_gib=80, gpus_per_node=1)
    docs = render(replace(RELEASE, model=f"tiny-{kind}"), "staging", gpu,
                  plan(SHAPE, GpuBudget(80, 1, 1)), k8s, kc.api_versions())
    path = out / f"{kind}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    kc.apply(path)
    return docs


def wait_for(what: str, check: Any, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_hpa_owns_the_replica_count_of_what_llmops_applies(
        cluster: Any, tmp_path: Path) -> None:
    docs = apply(cluster, "hpa", tmp_path)
    assert {d["kind"]: d["apiVersion"] for d in docs
            if d["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget")} == {
        "HorizontalPodAutoscaler": "autoscaling/v2beta2",
        "PodDisruptionBudget": "policy/v1beta1"}
    name = "tiny-hpa-staging"
    hpa = cluster.json("-n", NAMESPACE, "get", f"hpa/{name}")
    assert {f["manager"] for f in hpa["metadata"]["managedFields"]} >= {"llmops"}
    # The controller raises the Deployment (rendered without a count: 1) to minReplicas...
    wait_for("the HPA's minimum", lambda: (cluster.json(
        "-n", NAMESPACE, "get", f"deployment/{name}")["status"].get("readyReplicas") == 2))
    # ...and asks the custom metrics API for vLLM's queue, under vLLM's own name.
    raw = f"/apis/autoscaling/v2beta2/namespaces/{NAMESPACE}/horizontalpodautoscalers/{name}"

    def reading() -> str:
        status = yaml.safe_load(cluster.kubectl("get", "--raw", raw).stdout)["status"]
        return " ".join(c["message"] for c in status.get("conditions", [])
                        if c["type"] == "ScalingActive")
    said = wait_for("the HPA's metric reading", reading)
    assert "vllm:num_requests_waiting" in said, said
    # A second deploy leaves the autoscaler's count alone (llmops never owned it).
    apply(cluster, "hpa", tmp_path)
    time.sleep(2)
    deployment = cluster.json("-n", NAMESPACE, "get", f"deployment/{name}")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 160
    assert pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    budget = cluster.json("-n", NAMESPACE, "get", f"pdb/{name}")
    assert budget["spec"]["maxUnavailable"] == 1
    wait_for("the budget's count", lambda: cluster.json(
        "-n", NAMESPACE, "get", f"pdb/{name}").get("status", {}).get("expectedPods") == 2)
    assert cluster.json("-n", NAMESPACE, "get", f"configmap/{name}-dashboard")[
        "metadata"]["labels"]["grafana_dashboard"] == "1"


def test_keda_s_scaled_object_is_accepted_and_checked_against_keda_s_schema(
        cluster: Any, tmp_path: Path) -> None:
    docs = apply(cluster, "keda", tmp_path)
    name = "tiny-keda-staging"
    scaled = cluster.json("-n", NAMESPACE, "get", f"scaledobject/{name}")
    [rendered] = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled["spec"] == rendered["spec"]  # nothing pruned: every field is KEDA's
    assert cluster.json("-n", NAMESPACE, "get", f"pdb/{name}")["apiVersion"] == \
        "policy/v1beta1"
    assert "replicas" not in [d for d in docs if d["kind"] == "Deployment"][0]["spec"]
    # The API server holds ScaledObjects to KEDA's schema: a wrong type, an unknown field
    # and a missing trigger list are refused.
    for spec, error in [
        ({**rendered["spec"], "minReplicaCount": "one"}, "expected \"integer\""),
        ({**rendered["spec"], "triggers": [{**rendered["spec"]["triggers"][0],
                                            "metricTyp": "Value"}]}, 'unknown field "metricTyp"'),
        ({"scaleTargetRef": {"name": name}}, 'missing required field "triggers"'),
    ]:
        bad = {**rendered, "metadata": {"name": "bad", "namespace": NAMESPACE}, "spec": spec}
        done = cluster.kubectl("apply", "--server-side", "-f", "-",
                               stdin=yaml.safe_dump(bad), check=False)
        assert done.returncode != 0 and error in done.stderr, done.stderr
