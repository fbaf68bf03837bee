"""The remaining verbs that change something: check every configuration, stop a server."""

from __future__ import annotations

from flows.redaction import flow
from flows.tasks import PrefectSteps
from llmops.config import load_model
from llmops.errors import UsageError
from llmops.stages.context import Context
from llmops.stages.data import check_all_configs
from llmops.stages.deployment import stop as stop_model
from llmops.stages.deployment import target_for


@flow(name="check-config", log_prints=True)
def check_config(models: list[str] | None = None) -> list[str]:
    """Every YAML the release reads; raises listing each invalid one."""
    checks = check_all_configs(models)
    for c in checks:
        for note in c.notes:
            print(f"{c.label}: note: {note}")
    if bad := [f"{c.label}: {c.problem}" for c in checks if c.problem]:
        raise UsageError("invalid configurations:\n" + "\n".join(bad))
    return [c.label for c in checks]


@flow(name="stop", flow_run_name="{model}-{env}-stop", log_prints=True)
def stop(model: str, env: str = "local") -> str:
    """Stop serving a model in an environment (a local server: stopped, its record gone)."""
    dep = PrefectSteps()("stop", stop_model, load_model(model), target_for(env, Context()))
    return f"stopped {dep.model} {dep.version}"
