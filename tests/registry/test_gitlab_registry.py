"""The GitLab registry backend against the emulator of GitLab's API (a test double)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from gitlab_emulator import GitlabEmulator

from llmops.errors import StageFailed, UsageError
from llmops.registry.gitlab import GitlabRegistry, TokenSafeSession


@pytest.fixture()
def emulator() -> Iterator[GitlabEmulator]:
    with GitlabEmulator() as gl:
        yield gl


def registry(gl: GitlabEmulator, token: str | None = None, **kw: object) -> GitlabRegistry:
    return GitlabRegistry(gl.url, "1", token or gl.state.api_token, retry_wait_s=0.01, **kw)


def model_folder(tmp_path: Path, payload: bytes = b"weights") -> Path:
    folder = tmp_path / "package"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(payload)
    (folder / "adapter_config.json").write_text('{"r": 8}')
    (folder / "tokenizer" / "tokenizer.json").write_text("{}")
    return folder


LINEAGE = {"base_model": "smollm2", "gate.passed": "true"}


def test_register_get_download_round_trip(emulator: GitlabEmulator, tmp_path: Path) -> None:
    reg = registry(emulator)
    mv = reg.register("bot", model_folder(tmp_path), "run1", "1.4.0", LINEAGE)
    assert mv.version == "1.4.0" and mv.registry_id.isdigit() and mv.registry_id != "1.4.0"
    assert mv.digest.startswith("sha256:") and mv.base_model == "smollm2"
    stored = emulator.state.versions[int(mv.registry_id)]
    assert set(stored.files) == {"adapter_model.safetensors", "adapter_config.json",
                                 "tokenizer/tokenizer.json", "manifest.json", "model.sig"}
    got = reg.get("bot", "1.4.0")
    assert got == mv
    out = reg.download(got, tmp_path / "out")
    assert (out / "tokenizer" / "tokenizer.json").read_text() == "{}"


def test_non_semver_is_refused_before_any_call(emulator: GitlabEmulator, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not SemVer"):
        registry(emulator).register("bot", model_folder(tmp_path), "r", "v1", LINEAGE)
    assert emulator.state.requests == []


def test_a_502_is_retried(emulator: GitlabEmulator, tmp_path: Path) -> None:
    emulator.fail_next("PUT", r"/files/adapter_model", "502")
    emulator.fail_next("POST", r"model-versions/create", "502")
    mv = registry(emulator).register("bot", model_folder(tmp_path), "r", "1.0.0", LINEAGE)
    assert len(emulator.state.versions) == 1
    assert emulator.state.versions[int(mv.registry_id)].files["adapter_model.safetensors"] == \
        [b"weights"]


def test_dropped_connection_mid_upload_is_retried_without_duplicates(
        emulator: GitlabEmulator, tmp_path: Path) -> None:
    emulator.fail_next("PUT", r"/files/adapter_model", "drop")
    registry(emulator).register("bot", model_folder(tmp_path, b"x" * 100_000), "r", "1.0.0",
                                LINEAGE)
    assert len(emulator.state.versions) == 1 and emulator.duplicate_files() == 0


def test_rerun_after_an_interrupted_upload_completes_it(emulator: GitlabEmulator,
                                                        tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    for _ in range(5):  # more failures than retries: the first run gives up
        emulator.fail_next("PUT", r"/files/tokenizer", "502")
    with pytest.raises(Exception, match="502"):
        registry(emulator).register("bot", folder, "r", "2.0.0", LINEAGE)
    (version,) = emulator.state.versions.values()
    assert "manifest.json" not in version.files  # incomplete, and visibly so
    mv = registry(emulator).register("bot", folder, "r", "2.0.0", LINEAGE)
    assert len(emulator.state.versions) == 1 and emulator.duplicate_files() == 0
    assert "manifest.json" in emulator.state.versions[int(mv.registry_id)].files


def test_existing_version_with_other_content_is_refused(emulator: GitlabEmulator,
                                                        tmp_path: Path) -> None:
    registry(emulator).register("bot", model_folder(tmp_path / "a"), "r", "1.0.0", LINEAGE)
    with pytest.raises(UsageError, match="already exists in GitLab with different content"):
        registry(emulator).register("bot", model_folder(tmp_path / "b", b"other"), "r", "1.0.0",
                                    LINEAGE)


def test_file_over_the_size_limit_is_refused_before_creating_anything(
        emulator: GitlabEmulator, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="exceeds GitLab's per-file limit"):
        registry(emulator, max_file_bytes=5).register("bot", model_folder(tmp_path), "r",
                                                      "1.0.0", LINEAGE)
    assert emulator.state.versions == {}


def test_the_emulator_enforces_its_size_limit_too(emulator: GitlabEmulator,
                                                  tmp_path: Path) -> None:
    emulator.state.max_file_bytes = 5
    with pytest.raises(Exception, match="File is too large"):
        registry(emulator).register("bot", model_folder(tmp_path), "r", "1.0.0", LINEAGE)


def test_a_bad_token_is_a_usage_error_and_never_printed(
        emulator: GitlabEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "glpat-this-must-not-leak-000"
    with pytest.raises(UsageError, match="refused the token") as info:
        registry(emulator, token=secret).register("bot", model_folder(tmp_path), "r", "1.0.0",
                                                  LINEAGE)
    assert secret not in str(info.value) and secret not in caplog.text


def test_job_token_works_on_package_routes_only(emulator: GitlabEmulator) -> None:
    import httpx

    base = f"{emulator.url}/api/v4/projects/1"
    job = {"JOB-TOKEN": emulator.state.job_token}
    assert httpx.get(f"{base}/ml/mlflow/api/2.0/mlflow/registered-models/get?name=x",
                     headers=job).status_code == 401
    assert httpx.get(f"{base}/packages/ml_models/1/files/x", headers=job).status_code == 404
    assert httpx.get(f"{base}/packages/ml_models/1/files/x").status_code == 401


def test_errors_in_a_200_body_are_still_errors(tmp_path: Path) -> None:
    with GitlabEmulator(errors_as_200=True) as gl:
        reg = registry(gl)
        with pytest.raises(UsageError, match="has no version 9.9.9"):
            reg.get("bot", "9.9.9")
        mv = reg.register("bot", model_folder(tmp_path), "r", "1.0.0", LINEAGE)
        assert reg.get("bot", "1.0.0") == mv


def test_a_tampered_file_is_refused_on_download(emulator: GitlabEmulator,
                                                tmp_path: Path) -> None:
    reg = registry(emulator)
    mv = reg.register("bot", model_folder(tmp_path), "r", "1.0.0", LINEAGE)
    emulator.state.versions[int(mv.registry_id)].files["adapter_model.safetensors"].append(b"bad")
    with pytest.raises(StageFailed, match="sha256 mismatch"):
        reg.download(mv, tmp_path / "out")


def test_downloads_follow_the_object_storage_redirect_without_the_token(tmp_path: Path) -> None:
    """GitLab with object storage answers a file GET with a 302 to a pre-signed URL on
    another origin: python-gitlab's requests would carry PRIVATE-TOKEN there."""
    with GitlabEmulator(object_storage="127.0.0.1") as gl:
        reg = registry(gl)
        reg.register("bot", model_folder(tmp_path), "r", "1.0.0", LINEAGE)
        out = reg.download(reg.get("bot", "1.0.0"), tmp_path / "out")
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights"
    assert gl.store is not None and gl.store.seen  # register, get and download went there
    assert gl.store.tokens_seen(gl.state.api_token) == []


def test_a_plain_http_redirect_to_another_host_is_refused(tmp_path: Path) -> None:
    with GitlabEmulator(object_storage="localhost", proxy_download=True) as gl:
        reg = registry(gl)
        mv = reg.register("bot", model_folder(tmp_path), "r", "1.0.0", LINEAGE)
        gl.state.proxy_download = False
        with pytest.raises(StageFailed, match="plain http to another host") as info:
            reg.download(mv, tmp_path / "out")
    assert "X-Amz-Signature" not in str(info.value)  # a pre-signed URL's query is a credential
    assert gl.store is not None and gl.store.seen == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("target", "keeps"), [("http://127.0.0.1:8/b", True),
                                               ("http://127.0.0.1:9/b", False),
                                               ("https://127.0.0.1:8/b", False)])
def test_the_session_keeps_the_token_for_its_own_origin_only(target: str, keeps: bool) -> None:
    first = requests.Request("GET", "http://127.0.0.1:8/a", headers={
        "PRIVATE-TOKEN": "t", "JOB-TOKEN": "t", "Authorization": "Bearer t"}).prepare()
    answer = requests.Response()
    answer.request, answer.history = first, []
    follow = first.copy()
    follow.url = target
    TokenSafeSession().rebuild_auth(follow, answer)
    tokens = {k: follow.headers.get(k) for k in ("PRIVATE-TOKEN", "JOB-TOKEN", "Authorization")}
    assert tokens == ({"PRIVATE-TOKEN": "t", "JOB-TOKEN": "t", "Authorization": "Bearer t"}
                      if keeps else dict.fromkeys(tokens))


def test_a_retried_registration_keeps_the_first_signature(emulator: GitlabEmulator,
                                                          tmp_path: Path) -> None:
    """A retry signs again (an EC signature differs each time) but computes the same
    digest, and the signature the first try stored is kept: it signed these very files."""
    from llmops.config.paths import state_dir
    from llmops.signatures import Trusted, local_key_paths, verify

    reg = registry(emulator)
    folder = model_folder(tmp_path)
    first = reg.register("bot", folder, "run1", "1.4.0", LINEAGE)
    stored = emulator.state.versions[int(first.registry_id)].files["model.sig"]
    again = reg.register("bot", folder, "run1", "1.4.0", LINEAGE)
    assert again.digest == first.digest
    assert emulator.state.versions[int(first.registry_id)].files["model.sig"] == stored
    out = reg.download(again, tmp_path / "out")
    assert (out / "model.sig").read_bytes() == stored[-1]
    assert verify(out, [Trusted(key=local_key_paths(state_dir())[1])], "bot 1.4.0")
