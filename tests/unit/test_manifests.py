"""Rendered Kubernetes manifests validate against Kubernetes' own schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_validate import validate

from llmops.config import GpuTarget
from llmops.config.schema import KubernetesSettings
from llmops.errors import UsageError
from llmops.kubernetes.manifests import Release, k8s_name, render
from llmops.kubernetes.plan import GpuBudget, ModelShape, plan

REVISION = "12fd25f77366fa6b3b4b768ec3050bf629380bac"
RELEASE = Release("support-bot", "1.4.0", "sha256:abc",
                  f"HuggingFaceTB/SmolLM2-135M-Instruct@{REVISION}",
                  "https://gitlab.example/api/v4/projects/7")
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0@sha256:" + "0" * 64
K8S = KubernetesSettings(vllm_image=VLLM_IMAGE)
SHAPE = ModelShape(params=8_030_261_248, layers=32, hidden=4096, heads=32, kv_heads=8,
                   head_dim=128)



def gpu(**kw: object) -> GpuTarget:
    return GpuTarget.model_validate({"gpu_type": "nvidia-h100-80gb", "gpu_memory_gib": 24,
                                     "gpus_per_node": 8, **kw})


def rendered(g: GpuTarget, k8s: KubernetesSettings = K8S) -> list[dict]:  # type: ignore[type-arg]
    p = plan(SHAPE, GpuBudget(g.gpu_memory_gib, g.gpus_per_node, g.nodes,
                           max_model_len=g.max_model_len, max_num_seqs=g.max_num_seqs))
    return render(RELEASE, "production", g, p, k8s)


def by_kind(docs: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    """The first object of each kind (the fetch module's ConfigMap before the dashboard's)."""
    return {doc["kind"]: doc for doc in reversed(docs)}


# The oldest Kubernetes still commonly run, and the newest kubernetes-validate ships.
@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
@pytest.mark.parametrize("serve", ["lora", "merged"])
def test_manifests_pass_kubernetes_schemas(serve: str, version: str) -> None:
    docs = rendered(gpu(serve=serve))
    assert [d["kind"] for d in docs] == ["ConfigMap", "NetworkPolicy", "Deployment", "Service",
                                         "ConfigMap"]
    for doc in docs:
        validate(doc, version, strict=True)


HPA = {"kind": "hpa", "min_replicas": 2, "max_replicas": 6}
MODERN = {"autoscaling/v2", "autoscaling/v2beta2", "policy/v1",
          "custom.metrics.k8s.io/v1beta1"}


# 1.25 is the last release serving autoscaling/v2beta2 beside v2 (the API server of the
# test cluster, 1.20, checks the v2beta2 HPA and the policy/v1beta1 budget it gets).
@pytest.mark.parametrize(("version", "apis"), [
    ("1.25.0", {"autoscaling/v2beta2", "policy/v1", "custom.metrics.k8s.io/v1beta1"}),
    ("1.30.0", MODERN), ("1.37.0", MODERN)])
def test_autoscaled_manifests_pass_kubernetes_schemas(version: str, apis: set[str]) -> None:
    """The HPA and its budget, in the versions the cluster serves, and the Deployment with
    its graceful stop, against Kubernetes' own schemas."""
    k8s = KubernetesSettings.model_validate({"vllm_image": VLLM_IMAGE, "autoscaling": HPA})
    g = gpu()
    p = plan(SHAPE, GpuBudget(g.gpu_memory_gib, g.gpus_per_node, g.nodes,
                           max_model_len=g.max_model_len, max_num_seqs=g.max_num_seqs))
    docs = render(RELEASE, "production", g, p, k8s, apis)
    assert [d["kind"] for d in docs] == ["ConfigMap", "NetworkPolicy", "Deployment", "Service",
                                         "HorizontalPodAutoscaler", "PodDisruptionBudget",
                                         "ConfigMap"]
    for doc in docs:
        validate(doc, version, strict=True)


def test_tensor_parallel_equals_the_gpu_limit_and_probes_shm_metrics() -> None:
    kinds = by_kind(rendered(gpu()))
    deployment, service = kinds["Deployment"], kinds["Service"]
    pod = deployment["spec"]["template"]
    (vllm,) = pod["spec"]["containers"]
    args = vllm["args"]
    tp = int(args[args.index("--tensor-parallel-size") + 1])
    # 8B on 24 GiB GPUs: usable 24·0.9 − 2 = 19.6; TP=1 needs 14.96 + 16 = 30.96 → TP=2
    # gives 7.48 + 8 = 15.48 ✓.
    assert tp == 2
    assert "2" == vllm["resources"]["limits"]["nvidia.com/gpu"] == \
        vllm["resources"]["requests"]["nvidia.com/gpu"]
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    assert vllm["startupProbe"]["httpGet"]["path"] == "/health"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in vllm["volumeMounts"]
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert "--trust-remote-code" not in args
    # Idle connections outlive a load balancer's (60 s), so none is reset while reused.
    assert {"name": "VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "value": "75"} in vllm["env"]
    init = pod["spec"]["initContainers"][0]
    token = next(e for e in init["env"] if e["name"] == "REGISTRY_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "llmops-registry-read-token",
                                                  "key": "token"}
    assert service["spec"]["ports"][0]["port"] == 8000


def test_the_init_container_ships_the_fetch_module_and_what_it_imports() -> None:
    kinds = by_kind(rendered(gpu()))
    config, deployment = kinds["ConfigMap"], kinds["Deployment"]
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "scripts")
    paths = {item["key"]: item["path"] for item in volume["configMap"]["items"]}
    assert set(paths) == set(config["data"])
    assert paths["fetch.py"] == "llmops/kubernetes/fetch.py"
    for key, source in config["data"].items():
        compile(source, paths[key], "exec")


def test_a_model_that_does_not_fit_is_refused() -> None:
    with pytest.raises(UsageError, match="does not fit"):
        rendered(gpu(gpus_per_node=1, gpu_memory_gib=16))


def test_names_are_dns_labels() -> None:
    assert k8s_name("Support_Bot-Production") == "support-bot-production"


def test_every_object_goes_to_the_targets_namespace_and_none_without_one() -> None:
    """Without `kubernetes.namespace` kubectl uses the context's (never "default")."""
    assert all("namespace" not in d["metadata"] for d in rendered(gpu()))
    docs = rendered(gpu(), KubernetesSettings(vllm_image=VLLM_IMAGE, namespace="ml-serving"))
    assert {d["metadata"]["namespace"] for d in docs} == {"ml-serving"}


def test_a_disruption_budget_in_the_api_version_the_cluster_serves() -> None:
    """Kubernetes 1.20 serves policy/v1beta1 only; current clusters policy/v1 (discovery
    decides, as Helm charts do); one replica gets no budget (it would block drains)."""
    assert "PodDisruptionBudget" not in by_kind(rendered(gpu()))
    two = KubernetesSettings(vllm_image=VLLM_IMAGE, replicas=2, progress_deadline_s=900)
    g = gpu()
    p = plan(SHAPE, GpuBudget(g.gpu_memory_gib, g.gpus_per_node, g.nodes,
                           max_model_len=g.max_model_len, max_num_seqs=g.max_num_seqs))

    def budget(apis: set[str] | None) -> dict:  # type: ignore[type-arg]
        return by_kind(render(RELEASE, "production", g, p, two, apis))["PodDisruptionBudget"]

    assert budget({"v1", "apps/v1", "policy/v1beta1"})["apiVersion"] == "policy/v1beta1"
    assert budget({"policy/v1", "policy/v1beta1"})["apiVersion"] == "policy/v1"
    assert budget(None)["apiVersion"] == "policy/v1"  # --render, no cluster asked
    assert budget(None)["spec"]["minAvailable"] == 1
    with pytest.raises(UsageError, match="serves none of policy/v1"):
        budget({"v1", "apps/v1"})
    deployment = by_kind(render(RELEASE, "production", g, p, two))["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["progressDeadlineSeconds"] == 900


def test_local_and_kubernetes_servers_share_one_definition_of_the_vllm_arguments(
        tmp_path: Path) -> None:
    """The same flags for the same settings on both targets, each with its own extras."""
    from llmops.config import ServeSettings
    from llmops.serve.process import vllm_args as local_args

    resolved = ServeSettings(dtype="bfloat16", quantization="none", kvcache_space_gib=1)

    (tmp_path / "adapter_config.json").write_text('{"r": 32}')
    local = local_args("/base", "bot-base", {"bot": tmp_path}, 8001, resolved)
    release = Release("bot", "1.0.0", "sha256:x", "/base", "https://gl/api/v4/projects/1",
                      lora_rank=32)
    pod = by_kind(render(release, "staging", gpu(serve="lora", gpus_per_node=1,
                                                 gpu_memory_gib=80),
                         plan(SHAPE, GpuBudget(80, 1, 1, max_model_len=8192, max_num_seqs=16)),
                         K8S))["Deployment"]
    cluster = pod["spec"]["template"]["spec"]["containers"][0]["args"]
    for flag in ("--model", "--served-model-name", "--enable-lora", "--max-loras",
                 "--max-lora-rank"):
        assert local[local.index(flag) + 1:local.index(flag) + 2] == \
            cluster[cluster.index(flag) + 1:cluster.index(flag) + 2], flag
    assert "--tensor-parallel-size" in cluster and "--tensor-parallel-size" not in local
    assert "--block-size" in local and "--block-size" not in cluster


def test_a_hub_base_model_is_loaded_at_its_pinned_revision() -> None:
    args = by_kind(rendered(gpu(serve="lora")))["Deployment"]["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert args[args.index("--model") + 1] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert args[args.index("--revision") + 1] == REVISION
    assert args[args.index("--tokenizer-revision") + 1] == REVISION


def test_a_hub_base_model_without_a_revision_is_refused() -> None:
    from dataclasses import replace

    from llmops.config import DeployConfig

    with pytest.raises(ValueError, match="base_models.m: org/name is a Hub id without a rev"):
        DeployConfig.model_validate({"target": "kubernetes", "gpu": {
            "gpu_type": "x", "gpu_memory_gib": 80, "gpus_per_node": 1},
            "base_models": {"m": "org/name"}})
    DeployConfig.model_validate({"target": "local", "base_models": {"m": "/mnt/models/m"}})
    with pytest.raises(UsageError, match="without a revision"):
        render(replace(RELEASE, base_model="org/name"), "production", gpu(serve="lora"),
               plan(SHAPE, GpuBudget(24, 8, 1, max_model_len=8192, max_num_seqs=16)), K8S)
