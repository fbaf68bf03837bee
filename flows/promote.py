"""Promotion: open the merge request that pins a version, or apply merged pins."""

from __future__ import annotations

from flows.redaction import flow
from flows.tasks import PrefectSteps
from llmops.stages.context import Context
from llmops.stages.deployment import deploy_pins
from llmops.stages.registration import apply_promotion as apply_pins
from llmops.stages.registration import promote_version


@flow(name="promote", flow_run_name="{model}-{version}-to-{to_env}", log_prints=True)
def promote(model: str, version: str, to_env: str, local: bool = False) -> str:
    """Pin `model` `version` in registry/<to_env>.yml: a merge request (or, `local`, the
    file in this checkout)."""
    done = PrefectSteps()("promote", promote_version, model, version, to_env,
                          Context(), local)
    return str(done.merge_request.web_url if done.merge_request else done.pin_file)


@flow(name="apply-promotion", flow_run_name="apply-{env}", log_prints=True)
def apply_promotion(env: str, deploy: bool = False) -> list[str]:
    """After the merge: check every pin of `env` against the registry, point its aliases;
    with `deploy`, deploy each pin whose version does not serve yet."""
    ctx = Context()
    steps = PrefectSteps()
    applied = steps("apply-promotion", apply_pins, env, ctx)
    said = [f"{mv.name} {mv.version}" for mv in applied]
    if deploy:
        deployed = steps("deploy", deploy_pins, env, ctx)
        said += [f"{d.model} {d.version}: "
                 f"{'already served' if d.verified is None else 'deployed'}"
                 for d in deployed]
    return said
