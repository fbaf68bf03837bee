"""Deploy a registered version (default: the pinned one) to an environment, and verify it;
or verify what serves there now."""

from __future__ import annotations

from prefect import flow

from flows.tasks import PrefectSteps
from llmops.config import load_model
from llmops.stages.context import Context
from llmops.stages.deployment import (
    pinned_version,
    start_version,
    target_for,
    verify_env,
    verify_started,
)


@flow(name="deploy", flow_run_name="{model}-{env}-deploy", log_prints=True)
def deploy(model: str, env: str = "local", version: str | None = None) -> dict[str, str]:
    ctx, spec, steps = Context(), load_model(model), PrefectSteps()
    target = target_for(env, ctx)
    started = steps("deploy", start_version, spec, target, pinned_version(model, env, version))
    done = steps("verify", verify_started, spec, target, started, "deploy", ctx.registry)
    return {"version": done.endpoint.version, "url": done.endpoint.url}


@flow(name="verify", flow_run_name="{model}-{env}-verify", log_prints=True)
def verify(model: str, env: str = "local") -> dict[str, str]:
    done = PrefectSteps()("verify", verify_env, load_model(model),
                          target_for(env, Context()))
    return {"version": done.endpoint.version, "url": done.endpoint.url}
