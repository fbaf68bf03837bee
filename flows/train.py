"""Training alone: the config check, the data gate, then the trainer into a new MLflow run."""

from __future__ import annotations

from flows.artifacts import published_refusals
from flows.redaction import flow
from flows.tasks import PrefectSteps
from llmops.config import load_model
from llmops.stages.context import Context
from llmops.stages.training import train_candidate


@flow(name="train", flow_run_name="{model}-train", log_prints=True)
def train(model: str, backend: str = "auto", resume: bool = False) -> dict[str, str]:
    """Train `model` on validated data; returns the MLflow run and the adapter folder."""
    with published_refusals():  # a refused data gate's report, in the Prefect UI
        done = train_candidate(load_model(model), Context(), backend, resume, PrefectSteps())
    return {"run_id": done.run.run_id, "adapter_dir": str(done.result.adapter_dir)}
