"""What a registry version may put on disk, and what is served from it (issue #19, 2):
through the GitLab emulator (a test double), a version's files land only inside the
destination, only when its manifest verifies, only the files it lists, and only when the
version is complete; and a pin of a version that failed its gate is never applied."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from gitlab_emulator import GitlabEmulator

from llmops.digests import verify_manifest, write_manifest
from llmops.errors import CheckFailed, StageFailed
from llmops.registry import promote
from llmops.registry.base import ModelVersion
from llmops.registry.gitlab import GitlabRegistry

LINEAGE = {"base_model": "smollm2", "gate.passed": "true"}


@pytest.fixture()
def emulator() -> Iterator[GitlabEmulator]:
    with GitlabEmulator() as gl:
        gl.state.branches["main"]["registry/production.yml"] = "models: {}\n"
        yield gl


def registry(gl: GitlabEmulator) -> GitlabRegistry:
    return GitlabRegistry(gl.url, "1", gl.state.api_token, retry_wait_s=0.01)


def package(tmp_path: Path) -> Path:
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "adapter_config.json").write_text('{"r": 8}')
    return folder


def with_manifest(gl: GitlabEmulator, mv: ModelVersion, files: dict[str, str],
                  extra: dict[str, bytes]) -> ModelVersion:
    """The version's manifest replaced by one listing `files`, its digest tag updated to
    match (a registry whose content someone controls), and `extra` files stored with it."""
    body = json.dumps({"files": files}, indent=2, sort_keys=True)
    digest = "sha256:" + hashlib.sha256(body.encode()).hexdigest()
    stored = gl.state.versions[int(mv.registry_id)]
    stored.files["manifest.json"] = [(body + "\n").encode()]
    for rel, data in extra.items():
        stored.files[rel] = [data]
    stored.tags = [t if t["key"] != "digest" else {"key": "digest", "value": digest}
                   for t in stored.tags]
    return ModelVersion(mv.name, mv.version, mv.registry_id, mv.source, mv.run_id, digest,
                        mv.base_model, {**mv.tags, "digest": digest})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("escape", ["../outside.txt", "ABSOLUTE"])
def test_a_manifest_path_outside_the_destination_is_refused_and_nothing_is_written(
        emulator: GitlabEmulator, tmp_path: Path, escape: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    rel = str(work / "abs.txt") if escape == "ABSOLUTE" else escape
    reg = registry(emulator)
    mv = reg.register("bot", package(work), "r", "1.0.0", LINEAGE)
    evil = with_manifest(emulator, mv, {"adapter_model.safetensors": sha(b"weights"),
                                        rel: sha(b"pwned")}, {rel: b"pwned"})
    dest = work / "deploy" / "bot"
    with pytest.raises(StageFailed, match="outside the model folder"):
        reg.download(evil, dest)
    assert not (work / "outside.txt").exists() and not (work / "deploy" / "outside.txt").exists()
    assert not (work / "abs.txt").exists()
    assert not dest.exists()
    assert list((work / "deploy").glob("*")) == []  # no staging folder left either
    # `get` reads the same manifest: the version is refused before anyone uses it.
    with pytest.raises(StageFailed, match="outside the model folder"):
        reg.get("bot", "1.0.0")


def test_a_manifest_that_does_not_match_its_digest_is_not_parsed(
        emulator: GitlabEmulator, tmp_path: Path) -> None:
    reg = registry(emulator)
    mv = reg.register("bot", package(tmp_path), "r", "1.0.0", LINEAGE)
    emulator.state.versions[int(mv.registry_id)].files["manifest.json"] = [
        json.dumps({"files": {"../outside.txt": sha(b"x")}}).encode()]
    with pytest.raises(StageFailed, match="digest differs from the registered"):
        reg.download(mv, tmp_path / "deploy" / "bot")
    assert not (tmp_path / "deploy" / "outside.txt").exists()
    assert not (tmp_path / "deploy" / "bot").exists()


def test_an_unlisted_weights_file_is_never_served(emulator: GitlabEmulator,
                                                  tmp_path: Path) -> None:
    """vLLM loads every *.safetensors of a folder: one the manifest does not list, stored in
    the registry or left in the destination, must not end up beside the verified files."""
    reg = registry(emulator)
    mv = reg.register("bot", package(tmp_path), "r", "1.0.0", LINEAGE)
    emulator.state.versions[int(mv.registry_id)].files["extra.safetensors"] = [b"evil"]
    dest = tmp_path / "deploy" / "bot"
    dest.mkdir(parents=True)
    (dest / "stale.safetensors").write_bytes(b"left by an earlier copy")
    out = reg.download(mv, dest)
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json",
                                                     "adapter_model.safetensors",
                                                     "manifest.json", "model.sig"]
    verify_manifest(out, mv.digest)
    (out / "extra.safetensors").write_bytes(b"evil")
    with pytest.raises(StageFailed, match=r"extra.safetensors: not listed in"):
        verify_manifest(out, mv.digest)


def test_a_derived_folder_planted_among_a_versions_files_is_refused(tmp_path: Path) -> None:
    """Whoever can write the artifact store could add `merged/` with a derived.json of its
    own: deploys build derived weights in the state folder, so a version's folder holds
    nothing its manifest does not list, derived.json or not."""
    folder = package(tmp_path)
    digest = write_manifest(folder)
    merged = folder / "merged"
    merged.mkdir()
    (merged / "model.safetensors").write_bytes(b"planted")
    (merged / "derived.json").write_text("{}")
    with pytest.raises(StageFailed, match=r"merged/derived.json: not listed"):
        verify_manifest(folder, digest)


def test_the_signature_beside_the_manifest_is_not_an_unlisted_file(tmp_path: Path) -> None:
    folder = package(tmp_path)
    digest = write_manifest(folder)
    (folder / "model.sig").write_text("{}")
    verify_manifest(folder, digest)  # checked by llmops.signatures where it is served
    assert write_manifest(folder) == digest  # and never part of the version's digest


def test_a_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = package(tmp_path)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"weights")
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.safetensors").symlink_to(outside)
    digest = write_manifest(folder)
    with pytest.raises(StageFailed, match="resolves outside"):
        verify_manifest(folder, digest)


def test_a_half_uploaded_version_is_neither_complete_nor_promotable(
        emulator: GitlabEmulator, tmp_path: Path, repo_copy: Path) -> None:
    """The digest tag is set when the version is created, before its files are uploaded:
    an interrupted upload leaves a version that only its files show is incomplete."""
    folder = package(tmp_path)
    for _ in range(5):  # more failures than retries: the upload gives up half-way
        emulator.fail_next("PUT", r"/files/adapter_model", "502")
    with pytest.raises(Exception, match="502"):
        registry(emulator).register("bot", folder, "r", "1.0.0", LINEAGE)
    (stored,) = emulator.state.versions.values()
    assert any(t["key"] == "digest" for t in stored.tags)
    reg = registry(emulator)
    with pytest.raises(StageFailed, match=r"upload was interrupted"):
        reg.get("bot", "1.0.0")
    with pytest.raises(StageFailed, match=r"upload was interrupted"):
        promote.promote_local("bot", "1.0.0", "production", reg)
    mv = reg._to_version("bot", {"version": stored.id, "tags": stored.tags})
    with pytest.raises(StageFailed, match=r"upload was interrupted"):
        reg.download(mv, tmp_path / "deploy" / "bot")
    assert not (tmp_path / "deploy" / "bot").exists()


def test_a_version_missing_a_listed_file_is_incomplete(emulator: GitlabEmulator,
                                                       tmp_path: Path) -> None:
    reg = registry(emulator)
    mv = reg.register("bot", package(tmp_path), "r", "1.0.0", LINEAGE)
    del emulator.state.versions[int(mv.registry_id)].files["adapter_config.json"]
    with pytest.raises(StageFailed, match=r"bot 1.0.0 is incomplete.*adapter_config.json"):
        reg.get("bot", "1.0.0")
    with pytest.raises(StageFailed, match=r"no file adapter_config.json"):
        reg.download(mv, tmp_path / "deploy" / "bot")


def test_apply_promotion_refuses_a_hand_edited_pin_of_a_gate_failed_version(
        emulator: GitlabEmulator, tmp_path: Path, repo_copy: Path) -> None:
    """The pin names the right digest, but the version never passed its release gate: the
    merge request that `promote` would have refused was written by hand."""
    reg = registry(emulator)
    mv = reg.register("bot", package(tmp_path), "r", "1.0.0",
                      {**LINEAGE, "gate.passed": "false"})
    (repo_copy / "registry" / "production.yml").write_text(
        f"models:\n  bot: {{version: 1.0.0, digest: '{mv.digest}'}}\n")
    with pytest.raises(CheckFailed, match="did not pass its release gate"):
        promote.apply_promotion("production", reg)


def test_a_deploy_of_a_pinned_version_enforces_the_pins_digest(
        emulator: GitlabEmulator, tmp_path: Path, repo_copy: Path) -> None:
    """The local target verifies files against the registry's digest: a pin naming another
    digest (the registry's content changed after promotion) stops the deploy first."""
    from llmops.config import load_deploy, load_model
    from llmops.serve.target import LocalTarget
    from llmops.stages import deployment

    reg = registry(emulator)
    reg.register("tiny", package(tmp_path), "r", "1.0.0", LINEAGE)
    (repo_copy / "registry" / "production.yml").write_text(
        "models:\n  tiny: {version: 1.0.0, digest: 'sha256:" + "0" * 64 + "'}\n")
    target = LocalTarget("production", load_deploy("local"), reg)
    with pytest.raises(CheckFailed, match=r"pins tiny 1.0.0 at sha256:0+, but the registry "
                                          r"holds sha256:"):
        deployment.deploy_version(load_model("tiny"), target, "1.0.0", reg)
    assert not (repo_copy.parent / "state" / "deployments").exists()  # nothing fetched


def test_a_local_deploy_refuses_a_base_model_other_than_the_one_trained_on(
        emulator: GitlabEmulator, tmp_path: Path, repo_copy: Path) -> None:
    from llmops.config import load_deploy, load_model
    from llmops.digests import folder_digest
    from llmops.serve.target import LocalTarget
    from llmops.stages import deployment
    from llmops.stages.registration import base_identity

    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"base weights")
    identity = base_identity({"base_model": str(base)})
    assert identity == {"base_model.digest": folder_digest(base)}
    assert base_identity({"base_model": "org/hub-model", "revision_of_model": "abc123"}) == \
        {"base_model.revision": "abc123"}
    reg = registry(emulator)
    reg.register("tiny", package(tmp_path), "r", "1.0.0",
                 {**LINEAGE, "base_model": str(base), **identity})
    (base / "model.safetensors").write_bytes(b"another base")
    target = LocalTarget("local", load_deploy("local"), reg)
    with pytest.raises(CheckFailed, match=r"trained on the base model sha256:.*refusing to "
                                          r"serve the adapter on another base"):
        deployment.deploy_version(load_model("tiny"), target, "1.0.0", reg)
