"""Rollback on demand: the previous verified version of a model serves again."""

from __future__ import annotations

from prefect import flow

from flows import tasks
from llmops.config import load_model


@flow(name="rollback", flow_run_name="{model}-{env}-rollback", log_prints=True)
def rollback(model: str, env: str = "local") -> dict[str, str]:
    dep, _ = tasks.rollback(load_model(model), env)
    return {"version": dep.version, "url": dep.url}
