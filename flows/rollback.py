"""Rollback on demand: the previous verified version of a model serves again."""

from __future__ import annotations

from flows.redaction import flow
from flows.tasks import PrefectSteps
from llmops.config import load_model
from llmops.stages.context import Context
from llmops.stages.deployment import PinKeeper, rollback_env, target_for


@flow(name="rollback", flow_run_name="{model}-{env}-rollback", log_prints=True)
def rollback(model: str, env: str = "local", local: bool = False) -> dict[str, str]:
    """Serve the previous verified version of `model` in `env` again, verified; a pinned
    environment's pin then names it (merge request, or `local`: the pin file edited)."""
    ctx = Context()
    done = rollback_env(load_model(model), target_for(env, ctx), ctx.registry, PrefectSteps(),
                        PinKeeper(ctx, local))
    return {"version": done.endpoint.version, "url": done.endpoint.url}
