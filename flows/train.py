"""Training alone: the data gate (cached), then Axolotl into a new MLflow run."""

from __future__ import annotations

import time

from prefect import flow

from flows import tasks
from llmops import stages
from llmops.config import load_model


@flow(name="train", flow_run_name="{model}-train", log_prints=True)
def train(model: str) -> dict[str, str]:
    """Train `model` on validated data; returns the MLflow run and the adapter folder."""
    spec = load_model(model)
    tasks.check_config(spec)
    run_name = f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = stages.start_release_run(spec, run_name)
    ok = False
    try:
        tasks.validate_data(spec, run_id)
        result = tasks.train(spec, run_id, run_name)
        ok = True
        return {"run_id": run_id, "adapter_dir": str(result.adapter_dir)}
    finally:
        stages.finish_run(run_id, ok)
