"""Promotion by merge request, against the GitLab emulator (a test double)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gitlab
import pytest
import yaml
from gitlab_emulator import GitlabEmulator

from llmops.config.settings import Settings
from llmops.errors import CheckFailed, UsageError
from llmops.registry import promote
from llmops.registry.gitlab import GitlabRegistry


@pytest.fixture()
def emulator() -> Iterator[GitlabEmulator]:
    with GitlabEmulator() as gl:
        gl.state.branches["main"]["registry/production.yml"] = "models: {}\n"
        yield gl


def register(gl: GitlabEmulator, tmp_path: Path, version: str, gate_passed: str = "true"):  # type: ignore[no-untyped-def]
    folder = tmp_path / f"pkg-{version}"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"w" + version.encode())
    (folder / "gate_report.md").write_text("## Gate report: tiny — PASSED\n| golden | 0.9 |\n")
    reg = GitlabRegistry(gl.url, "1", gl.state.api_token, retry_wait_s=0.01)
    return reg, reg.register("tiny", folder, "run-1", version,
                             {"base_model": "b", "gate.passed": gate_passed})


def test_promote_opens_a_merge_request_and_merging_applies_it(
        emulator: GitlabEmulator, tmp_path: Path, repo_copy: Path) -> None:
    reg, mv = register(emulator, tmp_path, "1.2.0")
    project = gitlab.Gitlab(emulator.url, private_token=emulator.state.api_token).projects.get(1)
    mr = promote.promote_mr("tiny", "1.2.0", "production", reg, project,
                            promote.gate_evidence(reg, mv))
    stored = emulator.state.merge_requests[mr.iid]
    assert stored["target_branch"] == "main" and stored["state"] == "opened"
    assert "Gate report: tiny — PASSED" in stored["description"]
    assert mv.digest in stored["description"]
    # Nothing changes on main until the merge request is merged.
    assert emulator.state.branches["main"]["registry/production.yml"] == "models: {}\n"
    project.mergerequests.get(mr.iid).merge()
    merged = project.files.raw(file_path="registry/production.yml", ref="main")
    assert yaml.safe_load(merged)["models"]["tiny"] == {"version": "1.2.0", "digest": mv.digest}
    # CI on the default branch: the checkout now has the merged pin; apply checks it.
    (repo_copy / "registry" / "production.yml").write_bytes(merged)
    assert [v.version for v in promote.apply_promotion("production", reg)] == ["1.2.0"]


def test_a_version_that_failed_its_gate_is_refused(emulator: GitlabEmulator,
                                                   tmp_path: Path) -> None:
    reg, _ = register(emulator, tmp_path, "1.3.0", gate_passed="false")
    project = gitlab.Gitlab(emulator.url, private_token=emulator.state.api_token).projects.get(1)
    with pytest.raises(CheckFailed, match="did not pass its release gate"):
        promote.promote_mr("tiny", "1.3.0", "production", reg, project, "")
    assert emulator.state.merge_requests == {} and set(emulator.state.branches) == {"main"}


def test_apply_refuses_a_pin_whose_digest_does_not_match(
        emulator: GitlabEmulator, tmp_path: Path, repo_copy: Path) -> None:
    reg, mv = register(emulator, tmp_path, "1.4.0")
    (repo_copy / "registry" / "production.yml").write_text(
        "models:\n  tiny: {version: 1.4.0, digest: 'sha256:0000'}\n")
    with pytest.raises(CheckFailed, match="refusing to apply"):
        promote.apply_promotion("production", reg)


def test_promote_local_edits_the_pin_file(emulator: GitlabEmulator, tmp_path: Path,
                                          repo_copy: Path) -> None:
    reg, mv = register(emulator, tmp_path, "2.0.0")
    path = promote.promote_local("tiny", "2.0.0", "staging", reg)
    text = path.read_text()
    assert text.startswith("# Which version of each model runs in staging")
    assert yaml.safe_load(text)["models"]["tiny"]["digest"] == mv.digest


def test_backend_is_chosen_by_the_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://gitlab.example/api/v4/projects/7/ml/mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t")
    backend = promote.registry_backend(Settings.from_env())
    assert isinstance(backend, GitlabRegistry) and backend.project_id == "7"
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    with pytest.raises(Exception, match="set MLFLOW_TRACKING_TOKEN"):
        promote.registry_backend(Settings.from_env())
    # Tracking on an MLflow server, registry in GitLab.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("LLMOPS_REGISTRY_URI", "https://gl.example/api/v4/projects/9/ml/mlflow")
    monkeypatch.setenv("LLMOPS_REGISTRY_TOKEN", "t")
    backend = promote.registry_backend(Settings.from_env())
    assert isinstance(backend, GitlabRegistry) and backend.project_id == "9"


OTHER = "models:\n  other: {version: 3.0.0, digest: 'sha256:3333'}\n"


def gl_project(gl: GitlabEmulator) -> Any:
    return gitlab.Gitlab(gl.url, private_token=gl.state.api_token).projects.get(1)


def test_promotion_from_a_stale_checkout_keeps_the_other_models_pins(
        emulator: GitlabEmulator, tmp_path: Path, repo_copy: Path) -> None:
    # main pins `other` at 3.0.0; this checkout predates that and still says 1.0.0.
    emulator.state.branches["main"]["registry/production.yml"] = OTHER
    (repo_copy / "registry" / "production.yml").write_text(
        "models:\n  other: {version: 1.0.0, digest: 'sha256:1111'}\n")
    reg, mv = register(emulator, tmp_path, "1.2.0")
    project = gl_project(emulator)
    mr = promote.promote_mr("tiny", "1.2.0", "production", reg, project, "")
    project.mergerequests.get(mr.iid).merge()
    merged = yaml.safe_load(project.files.raw(file_path="registry/production.yml", ref="main"))
    assert merged["models"] == {"other": {"version": "3.0.0", "digest": "sha256:3333"},
                                "tiny": {"version": "1.2.0", "digest": mv.digest}}


def test_a_rerun_of_the_promotion_reuses_its_branch_and_merge_request(
        emulator: GitlabEmulator, tmp_path: Path, repo_copy: Path) -> None:
    reg, mv = register(emulator, tmp_path, "1.2.0")
    project = gl_project(emulator)
    first = promote.promote_mr("tiny", "1.2.0", "production", reg, project, "first run")
    # Meanwhile another model's promotion reaches main; the re-run builds on that.
    emulator.state.branches["main"]["registry/production.yml"] = OTHER
    again = promote.promote_mr("tiny", "1.2.0", "production", reg, project, "second run")
    assert again == first and list(emulator.state.merge_requests) == [first.iid]
    assert "second run" in emulator.state.merge_requests[first.iid]["description"]
    on_branch = yaml.safe_load(emulator.state.branches[first.branch]["registry/production.yml"])
    assert on_branch["models"] == {"other": {"version": "3.0.0", "digest": "sha256:3333"},
                                   "tiny": {"version": "1.2.0", "digest": mv.digest}}


def test_a_version_already_pinned_on_the_target_is_not_promoted_again(
        emulator: GitlabEmulator, tmp_path: Path, repo_copy: Path) -> None:
    reg, mv = register(emulator, tmp_path, "1.2.0")
    emulator.state.branches["main"]["registry/production.yml"] = (
        f"models:\n  tiny: {{version: 1.2.0, digest: '{mv.digest}'}}\n")
    with pytest.raises(UsageError, match="already pins tiny 1.2.0"):
        promote.promote_mr("tiny", "1.2.0", "production", reg, gl_project(emulator), "")
    assert emulator.state.merge_requests == {} and emulator.state.commits == []


def test_promotion_calls_to_gitlab_have_a_timeout(emulator: GitlabEmulator) -> None:
    project = promote.gitlab_project(Settings.from_env({
        "GITLAB_URL": emulator.url, "GITLAB_TOKEN": emulator.state.api_token,
        "GITLAB_PROJECT": "1"}))
    timeout = project.manager.gitlab.timeout  # python-gitlab's default is none: wait forever
    assert timeout is not None and 0 < timeout <= 120
    # And the session that drops the token on a redirect to another origin (the registry's).
    from llmops.registry.gitlab import TokenSafeSession

    assert isinstance(project.manager.gitlab.session, TokenSafeSession)


def test_after_a_rollback_a_merge_request_pins_what_serves(
        emulator: GitlabEmulator, tmp_path: Path, repo_copy: Path) -> None:
    """Git stays the truth: the pin names a version that was rolled back (its deploy
    failed), so a merge request pins the version that serves, with the reason; a pin that
    names what serves is left alone."""
    from types import SimpleNamespace

    from llmops.config import load_model
    from llmops.stages.deployment import PinKeeper

    reg, _ = register(emulator, tmp_path, "1.2.0")
    _, failed = register(emulator, tmp_path, "1.3.0")
    pins = f"models:\n  tiny: {{version: 1.3.0, digest: '{failed.digest}'}}\n"
    emulator.state.branches["main"]["registry/production.yml"] = pins
    (repo_copy / "registry" / "production.yml").write_text(pins)
    ctx = SimpleNamespace(registry=reg, settings=Settings(
        gitlab_url=emulator.url, gitlab_token=emulator.state.api_token, gitlab_project="1"))
    keeper = PinKeeper(ctx, local=False)  # type: ignore[arg-type]

    def serving(version: str | None) -> Any:
        return SimpleNamespace(env="production", settled=lambda spec: None if version is None
                               else SimpleNamespace(version=version))

    assert keeper.after_rollback(load_model("tiny"), serving("1.3.0"), "n/a") == ""
    assert emulator.state.merge_requests == {}
    # An undo that failed too: the cluster has not settled on one ready version (its
    # template may still name the failed one), so nothing is pinned in its place.
    stuck = keeper.after_rollback(load_model("tiny"), serving(None), "undo failed")
    assert "still pins tiny 1.3.0" in stuck and "not settled" in stuck, stuck
    assert emulator.state.merge_requests == {}
    note = keeper.after_rollback(load_model("tiny"), serving("1.2.0"),
                                 "the deploy of 1.3.0 failed: never ready")
    assert note.startswith("merge request !"), note
    (mr,) = emulator.state.merge_requests.values()
    assert mr["source_branch"] == "repin/tiny-1.2.0-to-production"
    assert mr["title"] == "Pin tiny 1.2.0 in production again (rolled back)"
    assert "never ready" in mr["description"] and "serves" in mr["description"]
    project = gitlab.Gitlab(emulator.url, private_token=emulator.state.api_token).projects.get(1)
    project.mergerequests.get(mr["iid"]).merge()
    merged = yaml.safe_load(project.files.raw(file_path="registry/production.yml", ref="main"))
    assert merged["models"]["tiny"]["version"] == "1.2.0"
