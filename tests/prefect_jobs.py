"""The Kubernetes Job a prefect-kubernetes worker submits for a deployment of prefect.yaml (a
test helper, not part of the product).

Each step is Prefect's own code, not a copy of it: the deployment as `prefect deploy`
templates it from the environment (`apply_values` over os.environ), its job variables
checked against the work pool's variables schema as the Prefect server checks them, and the
Job from `KubernetesWorkerJobConfiguration.resolve_for_flow_run` — what the worker calls
for each flow run (the work pool's base job template and the deployment's job variables,
then `prepare_for_flow_run`) before posting `configuration.job_manifest` to the cluster.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
from prefect.client.schemas.responses import DeploymentResponse
from prefect.utilities.schema_tools.validation import is_valid_schema, validate
from prefect.utilities.templating import apply_values
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "deploy" / "prefect-kubernetes-job-template.json"
POOL = "llmops-kubernetes"
# What a CI job's `prefect deploy` sees (scripts/prefect-kubernetes.sh needs the last three
# and exports the digests pinned in .gitlab-ci.yml).
CI_ENV = {"LLMOPS_PIPELINE_IMAGE_DIGEST": "sha256:" + "1a" * 32,
          "LLMOPS_TRAINER_IMAGE_DIGEST": "sha256:" + "2b" * 32,
          "CI_REGISTRY_IMAGE": "registry.gitlab.example.com/ml/llmops",
          "CI_PROJECT_URL": "https://gitlab.example.com/ml/llmops",
          "CI_COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567"}
PIPELINE_IMAGE = f"{CI_ENV['CI_REGISTRY_IMAGE']}/pipeline@{CI_ENV['LLMOPS_PIPELINE_IMAGE_DIGEST']}"
TRAINER_IMAGE = f"{CI_ENV['CI_REGISTRY_IMAGE']}/trainer@{CI_ENV['LLMOPS_TRAINER_IMAGE_DIGEST']}"
# prefect-kubernetes requires these two in the pod spec (its manifest check refuses a Job
# without them), where they are no PodSpec fields: an API server drops them (1.20 silently;
# later ones warn, as the worker does not ask for strict field validation).
WORKER_POD_SPEC_EXTRAS = ("completions", "parallelism")

Doc = dict[str, Any]


def base_job_template() -> Doc:
    return json.loads(TEMPLATE.read_text())


def deployments(name: str, env: dict[str, str] | None = None) -> dict[str, Doc]:
    """entrypoint -> prefect.yaml's deployment `name`, templated as `prefect deploy` does
    (its `{{ $VAR }}` placeholders from the environment, here `env`)."""
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    with mock.patch.dict(os.environ, CI_ENV if env is None else env):
        resolved = [apply_values(copy.deepcopy(d), os.environ, remove_notset=False)
                    for d in declared if d["name"] == name]
    return {d["entrypoint"]: d for d in resolved}


def check_job_variables(job_variables: Doc, template: Doc | None = None) -> None:
    """Raise as the Prefect server refuses a deployment whose job variables do not fit the
    work pool's variables schema (prefect.server.api.validation)."""
    schema = (template or base_job_template())["variables"]
    is_valid_schema(schema, preprocess=False)
    validate(job_variables, schema, raise_on_error=True, preprocess=True,
             ignore_required=True, allow_none_with_default=True)


class _Client:
    """The one read `resolve_for_flow_run` makes (the flow); any other use fails."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow

    async def read_flow(self, flow_id: object) -> Flow:
        assert flow_id == self._flow.id
        return self._flow


def render_job(entrypoint: str, parameters: Doc | None = None, *, name: str = "production",
               template: Doc | None = None, env: dict[str, str] | None = None) -> Doc:
    """The Job manifest the worker posts for a flow run of deployment `name` of
    `entrypoint` (e.g. 'flows/train.py:train')."""
    template = template or base_job_template()
    deployment = deployments(name, env)[entrypoint]
    job_variables = deployment["work_pool"]["job_variables"]
    check_job_variables(job_variables, template)
    flow = Flow(name=entrypoint.rsplit(":", 1)[1].replace("_", "-"))
    pool = WorkPool(name=deployment["work_pool"]["name"], type="kubernetes",
                    base_job_template=template)
    api_deployment = DeploymentResponse(
        name=name, flow_id=flow.id, entrypoint=entrypoint, work_pool_name=pool.name,
        job_variables=job_variables, parameters=deployment.get("parameters") or {},
        pull_steps=deployment.get("pull"))
    params = {"model": "support-bot", **(deployment.get("parameters") or {}),
              **(parameters or {})}
    flow_run = FlowRun(flow_id=flow.id, deployment_id=api_deployment.id,
                       name=f"{params['model']}-{flow.name}", parameters=params)
    configuration = asyncio.run(KubernetesWorkerJobConfiguration.resolve_for_flow_run(
        flow_run, client=_Client(flow), work_pool=pool,  # type: ignore[arg-type]
        worker_name="llmops-kubernetes-worker", deployment=api_deployment))
    return copy.deepcopy(configuration.job_manifest)


def without_worker_extras(job: Doc) -> Doc:
    """The Job as the API server keeps it: without prefect-kubernetes' two stray fields."""
    job = copy.deepcopy(job)
    for key in WORKER_POD_SPEC_EXTRAS:
        job["spec"]["template"]["spec"].pop(key, None)
    return job


def pod_spec(job: Doc) -> Doc:
    return job["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(job: Doc) -> Doc:
    (only,) = pod_spec(job)["containers"]
    return only  # type: ignore[no-any-return]
