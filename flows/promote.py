"""Promotion: open the merge request that pins a version, or apply merged pins."""

from __future__ import annotations

from prefect import flow

from flows import tasks
from llmops import promote as lib


@flow(name="promote", flow_run_name="{model}-{version}-to-{to_env}", log_prints=True)
def promote(model: str, version: str, to_env: str) -> str:
    """Open a merge request pinning `model` `version` in registry/<to_env>.yml."""
    registry = lib.registry_backend()
    mv = lib.checked_version(registry, model, version)
    mr = tasks.open_promotion(model, version, to_env, registry, lib.gitlab_project(),
                              lib.gate_evidence(registry, mv))
    print(f"merge request !{mr.iid}: {mr.web_url}")
    return str(mr.web_url)


@flow(name="apply-promotion", flow_run_name="apply-{env}", log_prints=True)
def apply_promotion(env: str) -> list[str]:
    """After the merge: check every pin of `env` against the registry, point its aliases."""
    return [f"{mv.name} {mv.version}"
            for mv in tasks.apply_promotion(env, lib.registry_backend())]
