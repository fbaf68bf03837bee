"""A policy check over the rendered Kubernetes objects: the serving pods are not open to
whoever can reach them, and cannot do more than serve.

`policy_violations` reads only the rendered dicts (what `kubectl apply` would get), so the
same check holds for any renderer: an API key from a Secret, a non-root uid, no privilege
escalation or capabilities, a read-only root filesystem with emptyDirs where vLLM writes,
seccomp RuntimeDefault, no service-account token, requests and limits, images by digest,
a read-only registry token from a Secret, and a NetworkPolicy admitting only the
configured peers on the vLLM port. And in-flight streams survive a pod's stop (vLLM drains,
the grace period outlasts preStop and the drain); an autoscaled Deployment leaves its count
to the autoscaler and keeps a PodDisruptionBudget.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from pydantic import ValidationError

from llmops.config import GpuTarget, load_deploy
from llmops.config.schema import FETCH_IMAGE, KubernetesSettings
from llmops.errors import UsageError
from llmops.kubernetes.manifests import Release, render
from llmops.kubernetes.plan import GpuBudget, ModelShape, plan, plan_for

Doc = dict[str, Any]
BY_DIGEST = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")
SECRET_LIKE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
# Where vLLM (and torch, Triton, Hugging Face under it) writes at run time.
WRITABLE = ("/tmp", "~/.cache", "~/.triton", "~/.config/vllm", "/models")

RELEASE = Release("support-bot", "1.4.0", "sha256:abc",
                  "HuggingFaceTB/SmolLM2-135M-Instruct@" + "0" * 40,
                  "https://gitlab.example/api/v4/projects/7")
SHAPE = ModelShape(params=8_030_261_248, layers=32, hidden=4096, heads=32, kv_heads=8,
                   head_dim=128)
IMAGE = "vllm/vllm-openai:v0.11.0@sha256:" + "0" * 64


def pod_specs(docs: list[Doc]) -> list[tuple[str, Doc, Doc]]:
    """(object name, pod template metadata, pod spec) of every workload."""
    return [(d["metadata"]["name"], d["spec"]["template"].get("metadata", {}),
             d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def writable(path: str, container: Doc, volumes: dict[str, Doc]) -> bool:
    """Whether `path` lies in an emptyDir the container mounts read-write."""
    return any((path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/"))
               and not m.get("readOnly") and "emptyDir" in volumes.get(m["name"], {})
               for m in container.get("volumeMounts", []))


def container_violations(where: str, c: Doc) -> list[str]:
    out = []
    if not BY_DIGEST.fullmatch(c.get("image", "")):
        out.append(f"{where}: image {c.get('image')!r} is not pinned by digest")
    sc = c.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        out.append(f"{where}: capabilities do not drop ALL")
    if sc.get("capabilities", {}).get("add"):
        out.append(f"{where}: adds capabilities")
    if sc.get("readOnlyRootFilesystem") is not True:
        out.append(f"{where}: the root filesystem is writable")
    if sc.get("privileged") or sc.get("runAsNonRoot") is False or sc.get("runAsUser") == 0:
        out.append(f"{where}: may run privileged or as root")
    resources = c.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    if not {"cpu", "memory"} <= set(requests):
        out.append(f"{where}: no cpu and memory requests")
    if "memory" not in limits:
        out.append(f"{where}: no memory limit")
    # A GPU request without the same limit is invalid; a limit alone is also the request.
    if "nvidia.com/gpu" in requests and requests["nvidia.com/gpu"] != limits.get("nvidia.com/gpu"):
        out.append(f"{where}: GPU requests and limits differ")
    for name, var in env_of(c).items():
        if SECRET_LIKE.search(name) and "secretKeyRef" not in var.get("valueFrom", {}):
            out.append(f"{where}: {name} is not read from a Secret")
    argv = [*c.get("command", []), *c.get("args", [])]
    for arg in argv:
        if arg.split("=")[0] in ("--trust-remote-code", "--api-key"):
            out.append(f"{where}: runs with {arg}")
    return out


def termination_violations(where: str, pod: Doc, vllm: Doc) -> list[str]:
    """In-flight streams finish when a pod stops: vLLM drains on SIGTERM (it aborts them
    by default), and the kubelet waits for preStop and the drain before it kills."""
    args = vllm.get("args", [])
    if "--shutdown-timeout" not in args:
        return [f"{where}: vLLM aborts in-flight requests on SIGTERM (no --shutdown-timeout)"]
    drain = int(args[args.index("--shutdown-timeout") + 1])
    command = vllm.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop = int(command[1]) if command[:1] == ["sleep"] else 0
    grace = pod.get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
    if grace <= pre_stop + drain:
        return [f"{where}: terminationGracePeriodSeconds {grace} does not outlast preStop "
                f"({pre_stop} s) and vLLM's drain ({drain} s)"]
    return []


def scaling_violations(docs: list[Doc]) -> list[str]:
    """An autoscaled Deployment sets no replica count (each apply would reset the
    autoscaler's) and keeps a PodDisruptionBudget (a drain must not take every pod)."""
    out = []
    for scaler in (d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")):
        target = scaler["spec"]["scaleTargetRef"]["name"]
        deployment = next((d for d in docs if d["kind"] == "Deployment"
                           and d["metadata"]["name"] == target), None)
        if deployment is None:
            out.append(f"{scaler['kind']} {scaler['metadata']['name']}: scales no rendered "
                       "Deployment")
            continue
        if "replicas" in deployment["spec"]:
            out.append(f"Deployment {target}: sets replicas under its {scaler['kind']}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if not any(d["kind"] == "PodDisruptionBudget"
                   and d["spec"]["selector"]["matchLabels"].items() <= labels.items()
                   for d in docs):
            out.append(f"Deployment {target}: autoscaled without a PodDisruptionBudget")
    return out


def policy_violations(docs: list[Doc]) -> list[str]:
    """Every breach of the serving policy in the rendered objects; [] when none."""
    out = [f"{d['kind']} {d['metadata']['name']}: a Secret's value must not be rendered"
           for d in docs if d["kind"] == "Secret"]
    for d in docs:
        if d["kind"] == "Service" and d["spec"].get("type", "ClusterIP") != "ClusterIP":
            out.append(f"Service {d['metadata']['name']}: exposed outside the cluster")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    specs = pod_specs(docs)
    if not specs:
        out.append("no workload rendered")
    for name, meta, pod in specs:
        where = f"Deployment {name}"
        if pod.get("automountServiceAccountToken") is not False:
            out.append(f"{where}: mounts a service-account token")
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            out.append(f"{where}: shares a host namespace")
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            out.append(f"{where}: runAsNonRoot is not true")
        for key in ("runAsUser", "runAsGroup"):
            # The vLLM image's user is root: runAsNonRoot alone would refuse to start it.
            if not isinstance(psc.get(key), int) or psc[key] == 0:
                out.append(f"{where}: {key} is not a non-root id")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            out.append(f"{where}: seccompProfile is not RuntimeDefault")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        if any("hostPath" in v for v in volumes.values()):
            out.append(f"{where}: mounts a hostPath")
        containers = pod.get("containers", [])
        for c in [*pod.get("initContainers", []), *containers]:
            out += container_violations(f"{where} container {c['name']}", c)
        vllm = next((c for c in containers if c["name"] == "vllm"), None)
        if vllm is None:
            out.append(f"{where}: no vllm container")
            continue
        out += termination_violations(where, pod, vllm)
        env = env_of(vllm)
        api_key = env.get("VLLM_API_KEY", {}).get("valueFrom", {})
        if "secretKeyRef" not in api_key:
            out.append(f"{where}: vLLM has no API key from a Secret (VLLM_API_KEY)")
        home = env.get("HOME", {}).get("value")
        for path in WRITABLE:
            full = path.replace("~", home) if home else path
            if full.startswith("~") or not writable(full, vllm, volumes):
                out.append(f"{where}: {path} is not a writable emptyDir for vllm")
        for init in pod.get("initContainers", []):
            token = env_of(init).get("REGISTRY_TOKEN", {}).get("valueFrom", {})
            if "secretKeyRef" not in token:
                out.append(f"{where}: {init['name']} has no registry token from a Secret")
            elif token["secretKeyRef"] == api_key.get("secretKeyRef"):
                out.append(f"{where}: {init['name']}'s registry token is the API key")
        labels = meta.get("labels", {})
        guarding = [p for p in policies
                    if p["spec"]["podSelector"].get("matchLabels")
                    and p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
                    and "Ingress" in p["spec"].get("policyTypes", [])]
        if not guarding:
            out.append(f"{where}: no NetworkPolicy limits who connects to its pods")
        ports = {p["containerPort"] for p in vllm.get("ports", [])}
        for policy in guarding:
            for rule in policy["spec"].get("ingress", []):
                peers = rule.get("from", [])
                # A rule without `from` or `ports` admits every source or every port.
                if not peers or any(not (p.get("podSelector") or p.get("namespaceSelector"))
                                    for p in peers):
                    out.append(f"NetworkPolicy {policy['metadata']['name']}: a rule admits "
                               "any source")
                if not rule.get("ports") or {p.get("port") for p in rule["ports"]} - ports:
                    out.append(f"NetworkPolicy {policy['metadata']['name']}: a rule admits "
                               "ports other than vLLM's")
    return out + scaling_violations(docs)


def gpu(**kw: object) -> GpuTarget:
    return GpuTarget.model_validate({"gpu_type": "nvidia-h100-80gb", "gpu_memory_gib": 24,
                                     "gpus_per_node": 8, **kw})


def rendered(k8s: KubernetesSettings | None = None, **kw: object) -> list[Doc]:
    g = gpu(**kw)
    p = plan(SHAPE, GpuBudget(g.gpu_memory_gib, g.gpus_per_node, g.nodes,
                           max_model_len=g.max_model_len, max_num_seqs=g.max_num_seqs))
    return render(RELEASE, "production", g, p, k8s or KubernetesSettings(vllm_image=IMAGE))


def kind(docs: list[Doc], name: str) -> Doc:
    return next(d for d in docs if d["kind"] == name)


@pytest.mark.parametrize("serve", ["lora", "merged"])
def test_rendered_manifests_meet_the_serving_policy(serve: str) -> None:
    assert policy_violations(rendered(serve=serve)) == []


@pytest.mark.parametrize("env", ["staging", "production"])
def test_the_repository_s_kubernetes_targets_render_within_the_policy(env: str) -> None:
    """deploy/<env>.yml as committed: its images by digest, its peers and Secrets."""
    config = load_deploy(env)
    assert config.gpu is not None
    docs = render(RELEASE, env, config.gpu, plan_for(SHAPE, config.gpu), config.kubernetes)
    assert policy_violations(docs) == []


def breaches() -> list[tuple[str, Any]]:
    """(what a breach looks like in the report, how to make it) for the check's own test."""
    def pod(d: list[Doc]) -> Doc:
        return kind(d, "Deployment")["spec"]["template"]["spec"]

    def vllm(d: list[Doc]) -> Doc:
        return pod(d)["containers"][0]

    def init(d: list[Doc]) -> Doc:
        return pod(d)["initContainers"][0]

    def drop_env(name: str) -> Any:
        return lambda d: vllm(d).__setitem__(
            "env", [e for e in vllm(d)["env"] if e["name"] != name])

    return [
        ("mounts a service-account token",
         lambda d: pod(d).pop("automountServiceAccountToken")),
        ("runAsUser is not a non-root id", lambda d: pod(d)["securityContext"].pop("runAsUser")),
        ("seccompProfile is not RuntimeDefault",
         lambda d: pod(d)["securityContext"].pop("seccompProfile")),
        ("allowPrivilegeEscalation is not false",
         lambda d: init(d)["securityContext"].pop("allowPrivilegeEscalation")),
        ("capabilities do not drop ALL",
         lambda d: vllm(d)["securityContext"]["capabilities"].__setitem__("drop", [])),
        ("the root filesystem is writable",
         lambda d: vllm(d)["securityContext"].pop("readOnlyRootFilesystem")),
        ("is not pinned by digest", lambda d: vllm(d).__setitem__("image", "vllm/vllm-openai")),
        ("no memory limit", lambda d: vllm(d)["resources"]["limits"].pop("memory")),
        ("no API key from a Secret", drop_env("VLLM_API_KEY")),
        ("~/.triton is not a writable emptyDir", drop_env("HOME")),
        ("/tmp is not a writable emptyDir", lambda d: vllm(d).__setitem__(
            "volumeMounts", [m for m in vllm(d)["volumeMounts"] if m["mountPath"] != "/tmp"])),
        ("REGISTRY_TOKEN is not read from a Secret", lambda d: init(d).__setitem__(
            "env", [e if e["name"] != "REGISTRY_TOKEN" else {"name": e["name"], "value": "x"}
                    for e in init(d)["env"]])),
        ("runs with --trust-remote-code",
         lambda d: vllm(d)["args"].append("--trust-remote-code")),
        ("no NetworkPolicy", lambda d: d.remove(kind(d, "NetworkPolicy"))),
        ("a rule admits any source",
         lambda d: kind(d, "NetworkPolicy")["spec"]["ingress"][0].pop("from")),
        ("a Secret's value must not be rendered", lambda d: d.append(
            {"kind": "Secret", "metadata": {"name": "key"}, "stringData": {"api-key": "x"}})),
        ("aborts in-flight requests on SIGTERM", lambda d: vllm(d).__setitem__(
            "args", [a for a in vllm(d)["args"] if a != "--shutdown-timeout"])),
        ("terminationGracePeriodSeconds 30 does not outlast preStop",
         lambda d: pod(d).pop("terminationGracePeriodSeconds")),
        ("terminationGracePeriodSeconds 130 does not outlast preStop (10 s)",
         lambda d: pod(d).__setitem__("terminationGracePeriodSeconds", 130)),
    ]


@pytest.mark.parametrize(("expected", "breach"), breaches(),
                         ids=[b[0] for b in breaches()])
def test_the_policy_check_catches_each_breach(expected: str, breach: Any) -> None:
    """The check is not vacuous: each property, taken away, is reported."""
    docs = copy.deepcopy(rendered())
    breach(docs)
    assert any(expected in v for v in policy_violations(docs)), policy_violations(docs)


AUTOSCALED = [{"kind": "hpa", "min_replicas": 2, "max_replicas": 4},
              {"kind": "keda", "min_replicas": 1, "max_replicas": 3,
               "prometheus_url": "http://prometheus.monitoring.svc:9090"}]


@pytest.mark.parametrize("scaling", AUTOSCALED, ids=["hpa", "keda"])
def test_autoscaled_manifests_meet_the_serving_policy(scaling: dict[str, Any]) -> None:
    k8s = KubernetesSettings.model_validate({"vllm_image": IMAGE, "autoscaling": scaling})
    assert policy_violations(rendered(k8s)) == []


@pytest.mark.parametrize("scaling", AUTOSCALED, ids=["hpa", "keda"])
@pytest.mark.parametrize(("expected", "breach"), [
    ("sets replicas under its", lambda d: kind(d, "Deployment")["spec"].__setitem__(
        "replicas", 2)),
    ("autoscaled without a PodDisruptionBudget",
     lambda d: d.remove(kind(d, "PodDisruptionBudget"))),
    ("scales no rendered Deployment", lambda d: d.remove(kind(d, "Deployment"))),
], ids=["replicas", "no-budget", "no-deployment"])
def test_the_policy_check_catches_each_autoscaling_breach(
        scaling: dict[str, Any], expected: str, breach: Any) -> None:
    docs = copy.deepcopy(rendered(KubernetesSettings.model_validate(
        {"vllm_image": IMAGE, "autoscaling": scaling})))
    breach(docs)
    assert any(expected in v for v in policy_violations(docs)), policy_violations(docs)


def test_secrets_and_peers_come_from_the_config() -> None:
    """Derived per model and environment by default, configurable; never the values."""
    docs = rendered()
    spec = kind(docs, "Deployment")["spec"]["template"]["spec"]
    vllm, init = spec["containers"][0], spec["initContainers"][0]
    assert env_of(vllm)["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "support-bot-production-api-key", "key": "api-key"}
    assert env_of(init)["REGISTRY_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "llmops-registry-read-token", "key": "token"}
    # The pipeline image (model-signing verifies the signature), by its digest.
    assert init["image"] == FETCH_IMAGE and vllm["image"] == IMAGE
    assert init["command"] == ["/opt/llmops/.venv/bin/python", "-m", "llmops.kubernetes.fetch"]
    assert spec["securityContext"]["runAsUser"] == 1000
    policy = kind(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name":
                                                    "support-bot-production"}
    assert [rule["from"] for rule in policy["ingress"]] == [
        [{"podSelector": {"matchLabels": {"llmops/serving-client": "true"}}}],
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
          "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]]

    fetch = "python@sha256:" + "1" * 64
    custom = KubernetesSettings.model_validate({
        "vllm_image": IMAGE, "fetch_image": fetch, "api_key_secret": "bot-key",
        "registry_token_secret": "gitlab-read", "registry_token_key": "read_api",
        "run_as_user": 2000, "clients": [{"namespace_labels": {"team": "apps"}}],
        "prometheus": {"namespace_labels": {"kubernetes.io/metadata.name": "obs"}}})
    docs = rendered(custom)
    assert policy_violations(docs) == []
    spec = kind(docs, "Deployment")["spec"]["template"]["spec"]
    vllm, init = spec["containers"][0], spec["initContainers"][0]
    assert env_of(vllm)["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "bot-key"
    assert env_of(init)["REGISTRY_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "gitlab-read", "key": "read_api"}
    assert init["image"] == fetch
    assert spec["securityContext"]["runAsGroup"] == 2000
    assert [rule["from"] for rule in kind(docs, "NetworkPolicy")["spec"]["ingress"]] == [
        [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}],
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "obs"}}}]]


def test_an_image_not_pinned_by_digest_is_refused() -> None:
    with pytest.raises(UsageError, match=r"deploy/production\.yml: kubernetes\.vllm_image: "
                                         r"not set; give vLLM's image pinned by digest"):
        rendered(KubernetesSettings(vllm_image=None))
    for field in ("vllm_image", "fetch_image"):
        with pytest.raises(ValidationError, match="is not pinned by digest"):
            KubernetesSettings.model_validate({field: "vllm/vllm-openai:v0.11.0"})
    with pytest.raises(ValidationError, match="give namespace_labels, pod_labels or both"):
        KubernetesSettings.model_validate({"clients": [{}]})
