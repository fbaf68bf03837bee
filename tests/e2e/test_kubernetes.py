"""The Kubernetes target against a real control plane (Kubernetes 1.20: etcd, API server,
controller manager, scheduler; tests/k8s_sim) with simulated GPU nodes of one A100 each
(the session's cluster, shared), whose pods become Running/Ready without containers.

Everything `llmops` does is the real path: discovery, server-side apply with its field
manager into the target's namespace, `rollout status` against the Deployment's progress
deadline, the scheduler's GPU accounting, `rollout undo --to-revision`, the history, the pin
kept in step. Only the endpoint is a stand-in: no pod can answer here, so `endpoint:` points
at a local vLLM CPU server (the same engine release) serving the tiny model under its name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_server import PrometheusServer, Version, VllmMetrics

pytestmark = pytest.mark.slow

NAMESPACE = "llmops-staging"
DEPLOYMENT = "tiny-staging"
IMAGE = "vllm/vllm-openai:v0.32.0@sha256:" + "ab" * 32  # never pulled: no runtime here

REGISTER = """
import sys
from pathlib import Path
import mlflow
from llmops.registry.base import MlflowRegistry
from llmops.tracking import tracking_uri
client = mlflow.MlflowClient(tracking_uri())
experiment = client.create_experiment("k8s-versions")
for version in sys.argv[1:]:
    folder = Path("adapters") / version
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(version.encode())
    run = client.create_run(experiment).info.run_id
    MlflowRegistry().register("tiny", folder, run, version, {"gate.passed": "true"})
"""


def target_yml(endpoint: str, gpu: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "target": "kubernetes",
        "gpu": {"gpu_type": "nvidia-a100-80gb", "gpu_memory_gib": 80, "gpus_per_node": 1,
                "max_model_len": 512, "max_num_seqs": 4, "serve": "lora", **gpu},
        "registry_api": "http://gitlab.invalid/api/v4/projects/1",
        "endpoint": endpoint,
        "kubernetes": {"vllm_image": IMAGE, "namespace": NAMESPACE, "progress_deadline_s": 15,
                       "fetch_image": "registry.example/llmops/pipeline@sha256:" + "cd" * 32},
        "verify": {"golden_prompts": 2, "min_golden_accuracy": None, "request_timeout_s": 60,
                   "load": {"concurrency": 2, "duration_s": 2, "min_requests": 2,
                            "max_tokens": 8, "max_error_rate": 0.0, "max_p99_latency_s": 60}},
    })


@pytest.fixture(scope="module")
def staging(k8s_cluster: Any, tmp_path_factory: pytest.TempPathFactory,
            repo_copy_factory: Callable[[Path], Path], fresh_home: Callable[[Path], Path],
            run_llmops: Callable[..., subprocess.CompletedProcess[str]],
            tiny_base: Path) -> Iterator[dict[str, Any]]:
    """A repository whose staging is the simulated cluster, three registered versions of
    tiny, and a local vLLM server behind staging's endpoint."""
    from llmops.config import ServeSettings
    from llmops.serve import process as serve

    base = tmp_path_factory.mktemp("k8s-e2e")
    root, home = repo_copy_factory(base), fresh_home(base)
    env = {"LLMOPS_ROOT": str(root), "LLMOPS_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", REGISTER, "0.1.0", "0.2.0", "0.3.0"],
                          cwd=base, env={**os.environ, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    k8s_cluster.namespace(NAMESPACE)
    k8s_cluster.keep_unready()  # the session's cluster: no other test's rule applies here
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    settings = ServeSettings(max_model_len=512, enforce_eager=True, max_num_seqs=4,
                             dtype="bfloat16", quantization="none", kvcache_space_gib=1)
    key = serve.local_api_key()
    server = serve.launch("k8s-endpoint", lambda port: serve.vllm_args(
        str(tiny_base), "tiny", {}, port, settings), settings, key)
    try:
        server.wait_healthy(600)
        endpoint = f"http://127.0.0.1:{server.port}/v1"
        (root / "deploy" / "staging.yml").write_text(target_yml(endpoint, {}))
        # A target whose pods need two GPUs (the KV cache of 1024 × 128k tokens does not
        # fit one), where no node has two.
        (root / "deploy" / "big.yml").write_text(target_yml(endpoint, {
            "gpus_per_node": 2, "max_model_len": 131072, "max_num_seqs": 1024}))
        cli_env = {**k8s_cluster.env(), "LLMOPS_API_KEY": key}

        def llmops(*args: str) -> subprocess.CompletedProcess[str]:
            return run_llmops(*args, root=root, home=home, timeout=900, extra_env=cli_env)

        yield {"root": root, "home": home, "llmops": llmops}
    finally:
        server.kill()
        # The cluster is the session's: give its GPUs back to the other tests.
        k8s_cluster.keep_unready()
        k8s_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.update({k: v})


def cluster_version(cluster: Any) -> str:
    deployment = cluster.json("-n", NAMESPACE, "get", f"deployment/{DEPLOYMENT}")
    return str(deployment["spec"]["template"]["metadata"]["labels"]["llmops/version"])


def history(home: Path) -> list[dict[str, Any]]:
    path = home / "deployments" / "tiny-staging.history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def pinned(root: Path) -> str:
    return str(yaml.safe_load((root / "registry" / "staging.yml").read_text())
               ["models"]["tiny"]["version"])


def test_deploy_verify_failed_rollout_and_rollback_keep_git_in_step(
        k8s_cluster: Any, staging: dict[str, Any]) -> None:
    llmops, root, home = staging["llmops"], staging["root"], staging["home"]

    first = llmops("deploy", "tiny", "--env", "staging", "--version", "0.1.0")
    assert first.returncode == 0, first.stdout + first.stderr
    deployment = k8s_cluster.json("-n", NAMESPACE, "get", f"deployment/{DEPLOYMENT}")
    assert deployment["status"]["readyReplicas"] == 1
    managers = {f["manager"] for f in deployment["metadata"]["managedFields"]}
    assert "llmops" in managers  # server-side apply with llmops' field manager
    pods = k8s_cluster.json("-n", NAMESPACE, "get", "pods", "-l",
                            f"app.kubernetes.io/name={DEPLOYMENT}")["items"]
    assert [p["spec"]["nodeName"].startswith("gpu-node-") for p in pods] == [True]
    assert pods[0]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"

    verified = llmops("verify", "tiny", "--env", "staging")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    second = llmops("deploy", "tiny", "--env", "staging", "--version", "0.2.0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert cluster_version(k8s_cluster) == "0.2.0"

    # 0.3.0 is promoted (pinned), but its pods never become ready.
    promoted = llmops("promote", "tiny", "0.3.0", "--to", "staging", "--local")
    assert promoted.returncode == 0, promoted.stderr
    k8s_cluster.keep_unready({"llmops/version": "0.3.0"})
    failed = llmops("deploy", "tiny", "--env", "staging", "--local")
    said = failed.stdout + failed.stderr
    assert failed.returncode == 1, said
    assert "ProgressDeadlineExceeded" in said and "running but not ready" in said, said
    assert "0.2.0 serves again" in said, said
    assert cluster_version(k8s_cluster) == "0.2.0"
    k8s_cluster.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}",
                        "--timeout=60s")
    events = history(home)
    assert (events[-2]["version"], events[-2]["result"]) == ("0.3.0", "failed")
    assert "ProgressDeadlineExceeded" in events[-2]["reason"]
    assert (events[-1]["version"], events[-1]["action"], events[-1]["result"]) == \
        ("0.2.0", "rollback", "restored")
    assert pinned(root) == "0.2.0", "the pin must name what serves after the undo"

    # By hand: back to the previous verified version (0.1.0), not the previous revision
    # (the failed 0.3.0).
    back = llmops("rollback", "tiny", "--env", "staging", "--local")
    assert back.returncode == 0, back.stdout + back.stderr
    assert cluster_version(k8s_cluster) == "0.1.0"
    assert pinned(root) == "0.1.0"
    assert history(home)[-1]["result"] == "serving"
    assert history(home)[-1]["version"] == "0.1.0"


def replica_set_marks(cluster: Any) -> dict[str, bool]:
    """{version: whether its newest ReplicaSet is marked verified} of tiny-staging."""
    marks: dict[str, tuple[int, bool]] = {}
    for rs in cluster.json("-n", NAMESPACE, "get", "replicasets")["items"]:
        meta = rs["metadata"]
        version = rs["spec"]["template"]["metadata"]["labels"]["llmops/version"]
        revision = int(meta["annotations"]["deployment.kubernetes.io/revision"])
        if revision > marks.get(version, (0, False))[0]:
            marks[version] = (revision, "llmops/verified-at" in meta["annotations"])
    return {version: marked for version, (_, marked) in marks.items()}


def test_a_rollback_without_the_history_file_finds_the_previous_verified_version_in_the_cluster(
        k8s_cluster: Any, staging: dict[str, Any]) -> None:
    """A CI job keeps no history of the deploys before it (`rollback-production`): the
    cluster marks each verified version's ReplicaSet, and a rollback goes to the newest
    other version marked so, never to a newer revision that failed."""
    llmops, root, home = staging["llmops"], staging["root"], staging["home"]
    assert cluster_version(k8s_cluster) == "0.1.0"  # the test above left it there
    assert replica_set_marks(k8s_cluster) == {"0.1.0": True, "0.2.0": True, "0.3.0": False}
    kept = home / "deployments" / "tiny-staging.history.jsonl"

    def rollback_as_a_fresh_job() -> subprocess.CompletedProcess[str]:
        kept.rename(kept.with_suffix(".aside"))
        try:
            return llmops("rollback", "tiny", "--env", "staging", "--local")
        finally:
            kept.with_suffix(".aside").rename(kept)

    back = rollback_as_a_fresh_job()
    assert back.returncode == 0, back.stdout + back.stderr
    assert cluster_version(k8s_cluster) == "0.2.0" and pinned(root) == "0.2.0"

    # 0.3.0 (still never ready) fails again and is undone: the newest revision after
    # 0.2.0's is now 0.3.0's, which must not be rolled back to.
    failed = llmops("deploy", "tiny", "--env", "staging", "--version", "0.3.0", "--local")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    k8s_cluster.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}",
                        "--timeout=60s")
    assert replica_set_marks(k8s_cluster) == {"0.1.0": True, "0.2.0": True, "0.3.0": False}
    again = rollback_as_a_fresh_job()
    said = again.stdout + again.stderr
    assert again.returncode == 0, said
    assert "0.2.0 → 0.1.0" in said and "verified 20" in said, said
    assert cluster_version(k8s_cluster) == "0.1.0" and pinned(root) == "0.1.0"


def test_lowering_the_replicas_removes_the_disruption_budget_it_no_longer_renders(
        k8s_cluster: Any, staging: dict[str, Any]) -> None:
    """Server-side apply never deletes: a PodDisruptionBudget of minAvailable 1 left beside
    one replica would block every node drain."""
    llmops, root = staging["llmops"], staging["root"]
    staging_yml = root / "deploy" / "staging.yml"
    one = staging_yml.read_text()
    config = yaml.safe_load(one)
    config["kubernetes"]["replicas"] = 2
    staging_yml.write_text(yaml.safe_dump(config))
    try:
        two = llmops("deploy", "tiny", "--env", "staging", "--version", "0.1.0")
        assert two.returncode == 0, two.stdout + two.stderr
        budget = k8s_cluster.json("-n", NAMESPACE, "get", f"pdb/{DEPLOYMENT}")
        assert budget["spec"]["minAvailable"] == 1
    finally:
        staging_yml.write_text(one)
    back = llmops("deploy", "tiny", "--env", "staging", "--version", "0.1.0")
    said = back.stdout + back.stderr
    assert back.returncode == 0, said
    assert f"no longer renders: PodDisruptionBudget/{DEPLOYMENT}" in said, said
    left = k8s_cluster.json("-n", NAMESPACE, "get", "pdb")["items"]
    assert left == [], left
    deployment = k8s_cluster.json("-n", NAMESPACE, "get", f"deployment/{DEPLOYMENT}")
    assert deployment["spec"]["replicas"] == 1


def test_a_canary_is_promoted_when_it_holds_and_rolled_back_by_itself_when_it_breaches(
        k8s_cluster: Any, staging: dict[str, Any], tmp_path: Path) -> None:
    """A canary beside the current version behind the same Service, judged at each step on
    what a real Prometheus scraped (the values are the test's, through the endpoint it
    scrapes) and on the verify checks: promoted to every pod when it holds; removed, with
    all traffic back on the current version and exit 1, when its errors breach; and never
    passed when Prometheus cannot be read."""
    llmops, root, home = staging["llmops"], staging["root"], staging["home"]
    k8s_cluster.keep_unready()  # every version becomes ready here
    metrics = VllmMetrics(NAMESPACE, "tiny-prod", "tiny")
    with PrometheusServer(tmp_path, metrics) as prometheus:
        config = yaml.safe_load((root / "deploy" / "staging.yml").read_text())
        config["kubernetes"]["canary"] = {
            "steps": [{"share": 0.3, "hold_s": 4}, {"share": 0.5, "hold_s": 4}],
            "prometheus_url": prometheus.url, "min_requests": 20}
        (root / "deploy" / "prod.yml").write_text(yaml.safe_dump(config))

        def prod_version() -> str:
            deployment = k8s_cluster.json("-n", NAMESPACE, "get", "deployment/tiny-prod")
            return str(deployment["spec"]["template"]["metadata"]["labels"]["llmops/version"])

        def canaries() -> list[Any]:
            return k8s_cluster.json("-n", NAMESPACE, "get", "deployments", "-l",
                                    "llmops/track=canary")["items"]

        first = llmops("deploy", "tiny", "--env", "prod", "--version", "0.1.0")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "canary" not in first.stdout + first.stderr  # nothing served before it

        metrics.versions = {"0.1.0": Version(), "0.2.0": Version()}
        held = llmops("deploy", "tiny", "--env", "prod", "--version", "0.2.0")
        said = held.stdout + held.stderr
        assert held.returncode == 0, said
        assert "canary step 1/2 passed: 0.2.0 on 1 of 2 pods (50%)" in said, said
        assert "canary step 2/2 passed" in said, said
        assert prod_version() == "0.2.0" and canaries() == []
        events = [json.loads(line) for line in
                  (home / "deployments" / "tiny-prod.history.jsonl").read_text().splitlines()]
        assert (events[-1]["version"], events[-1]["result"]) == ("0.2.0", "serving")

        metrics.versions = {"0.2.0": Version(), "0.3.0": Version(error_share=0.3)}
        breached = llmops("deploy", "tiny", "--env", "prod", "--version", "0.3.0")
        said = breached.stdout + breached.stderr
        assert breached.returncode == 1, said
        assert "step 1/2" in said and "error rate" in said, said
        assert "all traffic is back on 0.2.0" in said, said
        assert prod_version() == "0.2.0" and canaries() == []
        last = json.loads((home / "deployments" / "tiny-prod.history.jsonl")
                          .read_text().splitlines()[-1])
        assert (last["version"], last["action"], last["result"]) == ("0.3.0", "canary",
                                                                     "failed")
        assert "error rate" in last["reason"]

        metrics.versions["0.3.0"] = Version()
        prometheus.stop()
        blind = llmops("deploy", "tiny", "--env", "prod", "--version", "0.3.0")
        said = blind.stdout + blind.stderr
        assert blind.returncode == 1, said
        assert "inconclusive, so not passed" in said and "could not be read" in said, said
        assert prod_version() == "0.2.0" and canaries() == []
    k8s_cluster.kubectl("-n", NAMESPACE, "delete", "deployment/tiny-prod", check=False)


def test_a_pod_needing_more_gpus_than_any_node_has_is_refused_by_the_scheduler(
        k8s_cluster: Any, staging: dict[str, Any]) -> None:
    llmops = staging["llmops"]
    plan = llmops("plan", "tiny", "--env", "big")
    assert "TP=2" in plan.stdout, plan.stdout + plan.stderr
    done = llmops("deploy", "tiny", "--env", "big", "--version", "0.1.0")
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Insufficient nvidia.com/gpu" in said, said
    assert "nothing to roll back to" in said, said
