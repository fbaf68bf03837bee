"""Registering in GitLab when answers are lost: a create is looked up, never repeated blind,
and a retried registration yields the one version (against the GitLab emulator)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gitlab_emulator import GitlabEmulator

from llmops.registry.gitlab import GitlabRegistry

LINEAGE = {"base_model": "smollm2", "gate.passed": "true"}


@pytest.fixture()
def emulator() -> Iterator[GitlabEmulator]:
    with GitlabEmulator() as gl:
        yield gl


def registry(gl: GitlabEmulator) -> GitlabRegistry:
    return GitlabRegistry(gl.url, "1", gl.state.api_token, retry_wait_s=0.01)


def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "adapter_config.json").write_text('{"r": 8}')
    return folder


def posts(gl: GitlabEmulator, route: str) -> int:
    return sum(1 for method, path in gl.state.requests if method == "POST" and path.endswith(route))


def test_a_lost_answer_to_the_version_create_yields_one_complete_version(
        emulator: GitlabEmulator, tmp_path: Path) -> None:
    emulator.fail_next("POST", r"model-versions/create", "lost")
    mv = registry(emulator).register("bot", model_folder(tmp_path), "run1", "1.0.0", LINEAGE)
    (stored,) = emulator.state.versions.values()
    assert (mv.version, mv.registry_id) == ("1.0.0", str(stored.id))
    assert posts(emulator, "model-versions/create") == 1  # looked up, not created again
    assert set(stored.files) == {"adapter_model.safetensors", "adapter_config.json",
                                 "manifest.json", "model.sig"} \
        and emulator.duplicate_files() == 0


def test_a_lost_answer_to_the_model_create_is_not_an_error(emulator: GitlabEmulator,
                                                           tmp_path: Path) -> None:
    emulator.fail_next("POST", r"registered-models/create", "lost")
    registry(emulator).register("bot", model_folder(tmp_path), "run1", "1.0.0", LINEAGE)
    assert list(emulator.state.models) == ["bot"] and len(emulator.state.versions) == 1
    assert posts(emulator, "registered-models/create") == 1


def test_a_retried_registration_returns_the_same_version(emulator: GitlabEmulator,
                                                         tmp_path: Path) -> None:
    """Prefect retries `register` when its first attempt's answer is lost."""
    folder = model_folder(tmp_path)
    first = registry(emulator).register("bot", folder, "run1", "1.0.0", LINEAGE)
    again = registry(emulator).register("bot", folder, "run1", "1.0.0", LINEAGE)
    assert again == first and len(emulator.state.versions) == 1
    assert emulator.duplicate_files() == 0


def test_every_request_has_a_timeout(emulator: GitlabEmulator) -> None:
    assert registry(emulator).gl.timeout == 120
    assert GitlabRegistry(emulator.url, "1", "t", timeout_s=5).gl.timeout == 5
