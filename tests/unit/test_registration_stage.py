"""Registration and promotion as engine functions, against a fake behind the Registry
protocol: what is registered, under which version, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmops.config import load_model
from llmops.config.paths import run_folder
from llmops.config.settings import Settings
from llmops.errors import CheckFailed
from llmops.registry.base import ModelVersion
from llmops.stages import registration
from llmops.stages.context import Context


class FakeRegistry:
    def __init__(self) -> None:
        self.registered: list[tuple[str, str | None, dict[str, str], set[str]]] = []

    def register(self, name: str, folder: Path, run_id: str, version: str | None,
                 lineage: dict[str, str]) -> ModelVersion:
        files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        self.registered.append((run_id, version, lineage, files))
        return ModelVersion(name, version or "0.1.0", "1", "src", run_id, "sha256:x", "b",
                            dict(lineage))

    def get(self, name: str, version: str) -> ModelVersion:
        raise AssertionError("not used")

    def download(self, mv: ModelVersion, dest: Path) -> Path:
        raise AssertionError("not used")


def a_run(passed: bool) -> str:
    folder = run_folder("tiny", "run-1")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (folder / name).write_text("{}")
    (folder / "axolotl.resolved.yml").write_text("base_model: /models/tiny\n")
    (folder / "gate_report.json").write_text(json.dumps({"passed": passed, "rules": []}))
    (folder / "gate_report.md").write_text("# gate\n")
    (folder / "eval_report.json").write_text(json.dumps({"metrics": {"base": {},
                                                                      "candidate": {}}}))
    (folder / "data_report.json").write_text(json.dumps({"datasets": [
        {"path": "train.jsonl", "split": "train", "examples": 3, "sha256": "ab"}]}))
    return "run-1"


def context(**env: str) -> Any:
    ctx = Context(Settings.from_env(env))
    ctx.registry = FakeRegistry()  # type: ignore[assignment]
    ctx.run_tags = {"mlflow.source.git.commit": "c0ffee", **ctx.settings.ci_tags}  # type: ignore[misc]
    return ctx


def test_a_gated_run_is_registered_as_the_ci_tags_version_with_its_lineage(
        repo_copy: Path) -> None:
    ctx = context(CI_COMMIT_TAG="v1.4.0", CI_JOB_ID="42")
    mv = registration.register_stage(load_model("tiny"), a_run(passed=True), None, ctx)
    ((run_id, version, lineage, files),) = ctx.registry.registered
    assert (run_id, version, mv.version) == ("run-1", "1.4.0", "1.4.0")
    assert lineage["gitlab.CI_JOB_ID"] == "42" and lineage["base_model"] == "/models/tiny"
    assert lineage["data_sha256"] == "ab" and lineage["gate.passed"] == "true"
    assert {"README.md", "axolotl.yml", "gate_report.md", "adapter_model.safetensors"} <= files
    # Who signs is on the card (hashed: the same key gives the same line on a retry)
    assert lineage["signature.signer"].startswith("key sha256:")
    card = (run_folder("tiny", "run-1") / "package" / "README.md").read_text()
    assert f"- signed by: {lineage['signature.signer']} (`model.sig`)" in card
    assert "- provenance (`provenance.json`, in-toto SLSA v1): 1 datasets, 4 locks" in card
    assert "provenance.json" in files


def test_a_retried_register_job_builds_the_same_files(repo_copy: Path) -> None:
    """A retried CI job has another id and URL: they go to the version's tags, never into
    the hashed files, or the retry could not complete the first try's version."""
    from llmops.digests import folder_digest

    built = []
    for job in ("42", "43"):
        ctx = context(CI_COMMIT_TAG="v1.4.0", CI_PIPELINE_ID="77", CI_JOB_ID=job,
                      CI_PIPELINE_URL="https://gl.example/p/-/pipelines/77",
                      CI_JOB_URL=f"https://gl.example/p/-/jobs/{job}")
        folder, lineage = registration.build_package(load_model("tiny"), a_run(passed=True),
                                                     ctx.run_tags)
        assert lineage["gitlab.CI_JOB_URL"].endswith(f"/jobs/{job}")  # kept, as a tag
        card = (folder / "README.md").read_text()
        assert "pipelines/77" in card and "jobs/" not in card
        built.append(folder_digest(folder))
    assert built[0] == built[1]


def test_an_explicit_version_wins_and_none_means_the_next_patch(repo_copy: Path) -> None:
    tagged, local = context(CI_COMMIT_TAG="v1.4.0"), context()
    registration.register_stage(load_model("tiny"), a_run(passed=True), "2.0.0", tagged)
    registration.register_stage(load_model("tiny"), a_run(passed=True), None, local)
    assert tagged.registry.registered[0][1] == "2.0.0"
    assert local.registry.registered[0][1] is None  # the registry picks the next patch


def test_a_run_that_failed_its_gate_is_never_registered(repo_copy: Path) -> None:
    ctx = context()
    with pytest.raises(CheckFailed, match="did not pass its release gate"):
        registration.register_stage(load_model("tiny"), a_run(passed=False), None, ctx)
    assert ctx.registry.registered == []
