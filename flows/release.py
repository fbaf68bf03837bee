"""The release flow: validate → train → evaluate → gate → register → deploy → verify.

`llmops.stages.release.release` composes it; here each step runs as a Prefect task. Run it
with `llmops release <model>` (Prefect's ephemeral API by default, or the server in
PREFECT_API_URL), or through a deployment declared in prefect.yaml.
"""

from __future__ import annotations

from prefect.runtime import flow_run

from flows.artifacts import publish_data_report, publish_gate_report, published_refusals
from flows.redaction import flow
from flows.tasks import PrefectSteps
from llmops.config import load_model
from llmops.config.paths import run_folder
from llmops.stages import release as engine
from llmops.stages.context import Context
from llmops.stages.deployment import target_for


def _run_name() -> str:
    params = flow_run.parameters
    return f"{params['model']}-{params.get('version') or 'next'}"


def _name_run(version: str) -> None:
    """Once the version is known (the next patch by default), name the flow run after it."""
    from prefect.client.orchestration import get_client

    if flow_run.id:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=f"{flow_run.parameters['model']}-{version}")


@flow(name="release", flow_run_name=_run_name, log_prints=True)
def release(model: str, env: str = "local", version: str | None = None,
            config_checked: bool = False) -> engine.ReleaseSummary:
    """Release `model` to `env` (local or Kubernetes); raises (and registers nothing) when a
    gate refuses it. `config_checked`: the caller has just checked the Axolotl YAML."""
    ctx = Context()
    with published_refusals():  # the data or gate report of a refusal, in the Prefect UI
        summary = engine.release(load_model(model), target_for(env, ctx), ctx, version,
                                 PrefectSteps(), config_checked, on_version=_name_run)
    publish_data_report(summary.data_report)
    publish_gate_report(run_folder(model, summary.run_id) / "gate_report.json")
    return summary
