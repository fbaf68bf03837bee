"""The Job the prefect-kubernetes worker would submit for prefect.yaml's production
deployments (rendered by its own code, tests/prefect_jobs.py), dry-run on a real Kubernetes
1.20 API server (tests/k8s_sim): the server defaults, validates and admits it without
storing it. A broken Job is refused, so the check can fail.

`kubectl create`, not `apply`, for the Job as posted: the worker POSTs it with
`generateName`, which `apply` refuses; `apply` gets the same Job under a fixed name.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from prefect_jobs import container, pod_spec, render_job, without_worker_extras

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRAINING = ("flows/train.py:train",)
NOT_TRAINING = ("flows/deploy.py:deploy", "flows/deploy.py:verify")


@pytest.fixture(scope="module")
def cluster(k8s_cluster: Any) -> Any:
    """The session's cluster with the namespace the work pool's template names."""
    namespace = render_job(TRAINING[0])["metadata"]["namespace"]
    if k8s_cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0:
        k8s_cluster.namespace(namespace)
    return k8s_cluster


def dry_run(cluster: Any, job: dict[str, Any], *args: str) -> Any:
    """`kubectl create --dry-run=server` (or `args`) of `job`: the CompletedProcess."""
    return cluster.kubectl(*(args or ("create",)), "--dry-run=server", "-o", "json", "-f", "-",
                           stdin=json.dumps(job), check=False)


@pytest.mark.parametrize("entrypoint", [*TRAINING, *NOT_TRAINING])
def test_the_rendered_job_is_admitted_by_a_kubernetes_1_20_api_server(
        cluster: Any, entrypoint: str) -> None:
    job = render_job(entrypoint)
    # As the worker posts it (no client-side validation; the server drops the two stray
    # pod-spec fields prefect-kubernetes insists on).
    done = dry_run(cluster, job, "create", "--validate=false")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["metadata"]["name"].startswith(job["metadata"]["generateName"])
    assert created["metadata"]["namespace"] == "llmops"
    admitted = created["spec"]["template"]["spec"]
    assert "parallelism" not in admitted
    assert admitted["containers"][0]["image"] == container(job)["image"]
    if entrypoint in TRAINING:
        assert admitted["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert admitted["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    else:
        assert "nodeSelector" not in admitted
    # Every other field checked against 1.20's OpenAPI by kubectl, then by the server.
    checked = without_worker_extras(job)
    done = dry_run(cluster, checked)
    assert done.returncode == 0, done.stderr
    named = copy.deepcopy(checked)
    named["metadata"]["name"] = named["metadata"].pop("generateName") + "dry-run"
    done = dry_run(cluster, named, "apply")
    assert done.returncode == 0, done.stderr


def test_a_broken_job_is_refused(cluster: Any) -> None:
    job = without_worker_extras(render_job(TRAINING[0]))
    misspelt = copy.deepcopy(job)
    pod_spec(misspelt)["nodeSelektor"] = pod_spec(misspelt).pop("nodeSelector")
    done = dry_run(cluster, misspelt)
    assert done.returncode != 0 and "nodeSelektor" in done.stderr
    # Refused by the server itself, even unvalidated: a Job's pods may not restart.
    restarting = copy.deepcopy(job)
    pod_spec(restarting)["restartPolicy"] = "Always"
    done = dry_run(cluster, restarting, "create", "--validate=false")
    assert done.returncode != 0 and "restartPolicy" in done.stderr
    # A GPU request other than its limit.
    uneven = copy.deepcopy(job)
    container(uneven)["resources"]["requests"]["nvidia.com/gpu"] = 2
    done = dry_run(cluster, uneven, "create", "--validate=false")
    assert done.returncode != 0 and "nvidia.com/gpu" in done.stderr
