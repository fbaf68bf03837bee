"""prefect.yaml's production deployments on the Kubernetes work pool: the Job the
prefect-kubernetes worker would submit (rendered by its own code, tests/prefect_jobs.py)
passes Kubernetes' schemas, runs the pipeline image, and asks for a GPU node only when the
flow trains. The local `manual` deployments stay as they were."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import validate
from kubernetes_validate.utils import ValidationError
from prefect.utilities.schema_tools.validation import ValidationError as JobVariablesError
from prefect_jobs import (
    PIPELINE_IMAGE,
    REPO,
    TEMPLATE,
    TRAINER_IMAGE,
    WORKER_POD_SPEC_EXTRAS,
    base_job_template,
    check_job_variables,
    container,
    deployments,
    pod_spec,
    render_job,
    without_worker_extras,
)
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

TRAINING = ("flows/train.py:train",)
NOT_TRAINING = ("flows/deploy.py:deploy", "flows/deploy.py:verify")
GPU_NODES = {"nvidia.com/gpu.present": "true"}
# As tests/unit/test_manifests.py: the oldest Kubernetes still commonly run and the newest
# kubernetes-validate ships (it ships no 1.20; tests/e2e/test_prefect_on_cluster.py asks a
# real 1.20 API server instead).
VERSIONS = ["1.30.0", "1.37.0"]


def test_the_production_deployments_are_on_the_kubernetes_pool() -> None:
    production = deployments("production")
    assert set(production) == {*TRAINING, *NOT_TRAINING}
    for entrypoint, d in production.items():
        assert d["work_pool"]["name"] == "llmops-kubernetes", entrypoint
        # Pods clone the repository at the deployed commit (the image holds no flows/).
        (step,) = d["pull"]
        clone = step["prefect.deployments.steps.git_clone"]
        assert clone["repository"] == "https://gitlab.example.com/ml/llmops.git"
        assert clone["commit_sha"] == "0123456789abcdef0123456789abcdef01234567"
        # The token stays a Secret block reference, resolved in the pod, never stored.
        assert clone["access_token"] == "{{ prefect.blocks.secret.llmops-git-read-token }}"


def test_every_local_deployment_is_still_declared_on_the_process_pool() -> None:
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    manual = [d for d in declared if d["name"] == "manual"]
    assert len({d["entrypoint"] for d in manual}) == len(manual) == 13
    assert all(d["work_pool"]["name"] == "llmops-local" for d in manual)
    assert all("job_variables" not in d["work_pool"] and "pull" not in d for d in manual)
    assert {d["name"] for d in declared} == {"manual", "production"}


def test_the_template_is_prefect_kubernetes_default_plus_the_gpu_variables() -> None:
    ours, default = base_job_template(), KubernetesWorker.get_default_base_job_template()
    assert set(ours["variables"]["properties"]) - set(default["variables"]["properties"]) \
        == {"node_selector", "tolerations", "gpu_limit"}
    assert set(ours["job_configuration"]) == set(default["job_configuration"])
    assert TEMPLATE.read_text().endswith("}\n")  # what `--base-job-template` json.loads


@pytest.mark.parametrize("entrypoint", [*TRAINING, *NOT_TRAINING])
def test_job_variables_fit_the_pool_schema_and_a_wrong_type_does_not(entrypoint: str) -> None:
    job_variables = deployments("production")[entrypoint]["work_pool"]["job_variables"]
    check_job_variables(job_variables)
    with pytest.raises(JobVariablesError, match="gpu_limit"):
        check_job_variables({**job_variables, "gpu_limit": "one"})


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("entrypoint", [*TRAINING, *NOT_TRAINING])
def test_the_rendered_job_passes_kubernetes_schemas(entrypoint: str, version: str) -> None:
    job = render_job(entrypoint)
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    validate(job, version, strict=False)
    # Strictly, only prefect-kubernetes' two stray pod-spec fields are unknown.
    with pytest.raises(ValidationError, match="parallelism"):
        validate(job, version, strict=True)
    validate(without_worker_extras(job), version, strict=True)


def test_a_broken_job_fails_the_schema_check() -> None:
    job = without_worker_extras(render_job("flows/train.py:train"))
    broken = copy.deepcopy(job)
    pod_spec(broken)["nodeSelektor"] = GPU_NODES
    with pytest.raises(ValidationError):
        validate(broken, "1.30.0", strict=True)
    broken = copy.deepcopy(job)
    container(broken)["resources"]["limits"]["nvidia.com/gpu"] = ["1"]
    with pytest.raises(ValidationError):
        validate(broken, "1.30.0", strict=False)


def test_prefect_kubernetes_insists_on_its_stray_pod_spec_fields() -> None:
    """Why the strict check above strips them: the worker refuses a template without them."""
    template = base_job_template()
    for key in WORKER_POD_SPEC_EXTRAS:
        del template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][key]
    with pytest.raises(ValueError, match="parallelism"):
        render_job("flows/deploy.py:verify", template=template)


@pytest.mark.parametrize("entrypoint", [*TRAINING, *NOT_TRAINING])
def test_flow_runs_use_the_ci_images_and_the_pipeline_service_account(
        entrypoint: str) -> None:
    job = render_job(entrypoint)
    assert job["metadata"]["namespace"] == "llmops"
    assert pod_spec(job)["serviceAccountName"] == "llmops-pipeline"
    assert pod_spec(job)["restartPolicy"] == "Never"
    c = container(job)
    # Training in the CUDA trainer image (requirements/gpu.lock), the rest in the pipeline's,
    # each by its pinned digest.
    assert c["image"] == (TRAINER_IMAGE if entrypoint in TRAINING else PIPELINE_IMAGE)
    assert c["args"] == ["/opt/llmops/.venv/bin/prefect", "flow-run", "execute"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LLMOPS_ROOT"] == "/opt/llmops/checkout"
    # The images hold no llmops package: the clone's flows and its src/ are imported.
    assert env["PYTHONPATH"] == "/opt/llmops/checkout:/opt/llmops/checkout/src"
    assert env["PREFECT__FLOW_RUN_ID"] == job["metadata"]["labels"]["prefect.io/flow-run-id"]
    assert "{{" not in json.dumps(job)  # every placeholder filled


@pytest.mark.parametrize("entrypoint", TRAINING)
def test_training_runs_on_a_gpu_node_with_one_gpu(entrypoint: str) -> None:
    job = render_job(entrypoint)
    assert pod_spec(job)["nodeSelector"] == GPU_NODES
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} \
        in pod_spec(job)["tolerations"]
    resources = container(job)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in resources["requests"]  # the limit is the request


@pytest.mark.parametrize("entrypoint", NOT_TRAINING)
def test_other_flows_ask_for_no_gpu(entrypoint: str) -> None:
    job = render_job(entrypoint)
    assert "nodeSelector" not in pod_spec(job)
    assert "tolerations" not in pod_spec(job)
    resources = container(job)["resources"]
    assert not any("nvidia.com" in k for part in resources.values() for k in part)
    assert resources["requests"] == {"cpu": "1", "memory": "4Gi"}


def test_the_image_follows_the_deploy_environment() -> None:
    pipeline, trainer = "sha256:" + "c" * 64, "sha256:" + "d" * 64
    env = {"CI_REGISTRY_IMAGE": "registry.example/x", "LLMOPS_PIPELINE_IMAGE_DIGEST": pipeline,
           "LLMOPS_TRAINER_IMAGE_DIGEST": trainer, "CI_PROJECT_URL": "https://g/x",
           "CI_COMMIT_SHA": "f" * 40}
    assert container(render_job("flows/train.py:train", env=env))["image"] == \
        f"registry.example/x/trainer@{trainer}"
    assert container(render_job("flows/deploy.py:deploy", env=env))["image"] == \
        f"registry.example/x/pipeline@{pipeline}"


def test_the_worker_configuration_class_is_the_one_of_the_kubernetes_worker() -> None:
    assert KubernetesWorker.job_configuration is KubernetesWorkerJobConfiguration
    assert KubernetesWorker.type == "kubernetes"


FAKE_PREFECT = """#!/usr/bin/env bash
echo "$* pipeline=${LLMOPS_PIPELINE_IMAGE_DIGEST:-} trainer=${LLMOPS_TRAINER_IMAGE_DIGEST:-}" \\
  >> "$FAKE_LOG"
"""


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "placeholder"])
def test_the_deployments_get_the_committed_pin_or_none(tmp_path: Path, pinned: bool) -> None:
    """scripts/prefect-kubernetes.sh hands `prefect deploy` the digests .gitlab-ci.yml pins;
    with a fresh clone's placeholder it registers nothing (the pods could not pull it)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "prefect-kubernetes.sh", tmp_path / "scripts")
    ci = (REPO / ".gitlab-ci.yml").read_text()
    pipeline, trainer = "sha256:" + "e" * 64, "sha256:" + "f" * 64
    if pinned:
        ci = re.sub(r"(?m)^(  LLMOPS_PIPELINE_IMAGE_DIGEST:).*$", rf'\1 "{pipeline}"', ci)
        ci = re.sub(r"(?m)^(  LLMOPS_TRAINER_IMAGE_DIGEST:).*$", rf'\1 "{trainer}"', ci)
    else:
        ci = re.sub(r"(?m)^(  LLMOPS_PIPELINE_IMAGE_DIGEST:).*$", rf'\1 "sha256:{"0" * 64}"',
                    ci)
    (tmp_path / ".gitlab-ci.yml").write_text(ci)
    prefect, log = tmp_path / "prefect", tmp_path / "prefect.log"
    prefect.write_text(FAKE_PREFECT)
    prefect.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "PREFECT": str(prefect), "FAKE_LOG": str(log),
           "PREFECT_API_URL": "http://127.0.0.1:1/api", "CI_REGISTRY_IMAGE": "registry.example/x",
           "CI_PROJECT_URL": "https://g/x", "CI_COMMIT_SHA": "f" * 40}
    done = subprocess.run(["bash", "scripts/prefect-kubernetes.sh"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines()
    if pinned:
        assert done.returncode == 0, done.stderr
        assert calls[-1] == (f"--no-prompt deploy --name production pipeline={pipeline} "
                             f"trainer={trainer}")
    else:
        assert done.returncode == 2
        assert "LLMOPS_PIPELINE_IMAGE_DIGEST in .gitlab-ci.yml is sha256:000" in done.stderr
        assert "pin the CI images first" in done.stderr
        assert not any(c.startswith("--no-prompt deploy") for c in calls)
