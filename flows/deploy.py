"""Deploy a registered version (default: the pinned one) to an environment, and verify it;
or verify what serves there now."""

from __future__ import annotations

from flows.redaction import flow
from flows.tasks import PrefectSteps
from llmops.config import load_model
from llmops.stages.context import Context
from llmops.stages.deployment import (
    PinKeeper,
    deploy_version,
    pinned_version,
    target_for,
    verify_env,
)


@flow(name="deploy", flow_run_name="{model}-{env}-deploy", log_prints=True)
def deploy(model: str, env: str = "local", version: str | None = None,
           local: bool = False) -> dict[str, str]:
    """Serve `version` (default: registry/<env>.yml's pin) in `env` once it verifies; a
    failed deploy of a pinned environment pins what serves (merge request, or `local`)."""
    ctx = Context()
    done = deploy_version(load_model(model), target_for(env, ctx),
                          pinned_version(model, env, version), ctx.registry, PrefectSteps(),
                          PinKeeper(ctx, local))
    return {"version": done.endpoint.version, "url": done.endpoint.url}


@flow(name="verify", flow_run_name="{model}-{env}-verify", log_prints=True)
def verify(model: str, env: str = "local") -> dict[str, str]:
    """Check what serves in `env` again: smoke, golden minimum, load; switch nothing."""
    done = PrefectSteps()("verify", verify_env, load_model(model),
                          target_for(env, Context()))
    return {"version": done.endpoint.version, "url": done.endpoint.url}
