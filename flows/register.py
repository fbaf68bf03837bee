"""Register a gated run as a version, and write the files of its GitLab Release."""

from __future__ import annotations

from pathlib import Path

from flows.redaction import flow
from flows.tasks import PrefectSteps
from llmops.config import load_model
from llmops.stages.context import Context
from llmops.stages.registration import register_stage, release_notes


@flow(name="register", flow_run_name="{model}-{run_id}", log_prints=True)
def register(model: str, run_id: str, version: str | None = None) -> dict[str, str]:
    mv = PrefectSteps()("register", register_stage, load_model(model), run_id, version,
                        Context())
    return {"version": mv.version, "digest": mv.digest}


@flow(name="release-notes", flow_run_name="{model}-{version}-notes", log_prints=True)
def notes(model: str, version: str, out: str = "release") -> str:
    return str(PrefectSteps()("release-notes", release_notes, load_model(model), version,
                              Path(out), Context().registry))
