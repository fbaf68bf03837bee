"""The CI images reach jobs only through the protected default branch: scripts/build-images.sh
builds without credentials in merge requests, pushes and records digests only on a
protected branch, never reuses what a tag names, and refuses unpinned base images;
scripts/image-tag.sh pins only digests built for the current inputs, and a tag pipeline
refuses images that are not pinned. Buildah is faked: it records its arguments."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLACEHOLDER = "sha256:" + "0" * 64
REGISTRY_IMAGE = "registry.example.com/ml/llmops"
PASSWORD = "s3cret-pw"

FAKE_BUILDAH = REPO / "tests" / "fakes" / "buildah"  # records its arguments


def pushed_digest(name: str, tag: str) -> str:
    """What the fake Buildah reports for a push of image `name` under `tag`."""
    dest = f"docker://{REGISTRY_IMAGE}/{name}:{tag}"
    return "sha256:" + hashlib.sha256(dest.encode()).hexdigest()


def committed(ws: Path, name: str) -> str:
    match = re.search(rf'(?m)^  {name}: "?([^"\n]*)"?$', (ws / ".gitlab-ci.yml").read_text())
    assert match, name
    return match.group(1)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """What the images are built from, with the trainer's placeholder base digest replaced
    (the real one cannot be looked up offline) and the tag written for that."""
    ws = tmp_path / "ws"
    for folder in ("scripts", "docker", "requirements"):
        shutil.copytree(REPO / folder, ws / folder)
    shutil.copy(REPO / ".gitlab-ci.yml", ws)
    for dockerfile in (ws / "docker").glob("*.Dockerfile"):
        dockerfile.write_text(dockerfile.read_text().replace(PLACEHOLDER, "sha256:" + "ab" * 32))
    image_tag(ws, "--write")
    return ws


def image_tag(ws: Path, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    return subprocess.run(["bash", "scripts/image-tag.sh", *args], cwd=ws, text=True,
                          capture_output=True, env={**clean, **(env or {})}, timeout=60)


def build_images(ws: Path, **variables: str) -> tuple[int, str, str]:
    """Run build-images.sh as the job would, with the job's variables; (rc, output, log)."""
    bin_dir = ws.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    shutil.copy(FAKE_BUILDAH, bin_dir / "buildah")
    (bin_dir / "buildah").chmod(0o755)
    log = ws.parent / "buildah.log"
    log.write_text("")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "CI_"))}
    env = {**clean, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log),
           "CI_REGISTRY": "registry.example.com", "CI_REGISTRY_IMAGE": REGISTRY_IMAGE,
           "CI_REGISTRY_USER": "gitlab-ci-token", "CI_REGISTRY_PASSWORD": PASSWORD,
           "TMPDIR": str(ws.parent),
           **{n: committed(ws, n) for n in ("LLMOPS_IMAGE_TAG", "LLMOPS_PINNED_IMAGE_TAG",
                                            "LLMOPS_PIPELINE_IMAGE_DIGEST")},
           **variables}
    done = subprocess.run(["bash", "scripts/build-images.sh"], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr, log.read_text()


MERGE_REQUEST = {"LLMOPS_PUSH_IMAGES": "false", "CI_PIPELINE_SOURCE": "merge_request_event",
                 "CI_COMMIT_REF_PROTECTED": "false"}
DEFAULT_BRANCH = {"LLMOPS_PUSH_IMAGES": "true", "CI_PIPELINE_SOURCE": "push",
                  "CI_COMMIT_REF_PROTECTED": "true"}


def test_a_merge_request_builds_both_without_logging_in_or_pushing(workspace: Path) -> None:
    rc, out, log = build_images(workspace, **MERGE_REQUEST)
    assert rc == 0, out
    calls = log.splitlines()
    assert [c.split()[0] for c in calls if c.startswith("build ")] == ["build", "build"]
    assert not any(c.startswith(("login", "manifest push", "push")) for c in calls), log
    assert PASSWORD not in log + out
    assert not (workspace / "images.env").exists()
    tag = committed(workspace, "LLMOPS_IMAGE_TAG")
    for name in ("pipeline", "trainer"):  # built under a local name, never the registry's
        build = next(c for c in calls if f"--file docker/{name}.Dockerfile" in c)
        assert "--isolation chroot" in build and "--storage-driver vfs" in build
        assert f"--manifest localhost/llmops-{name}:{tag}" in build
        assert REGISTRY_IMAGE not in build


@pytest.mark.parametrize("variables", [
    {**DEFAULT_BRANCH, "CI_COMMIT_REF_PROTECTED": "false"},
    {**DEFAULT_BRANCH, "CI_PIPELINE_SOURCE": "merge_request_event"},
    {"LLMOPS_PUSH_IMAGES": "true", "CI_PIPELINE_SOURCE": "push"},
], ids=["unprotected", "merge-request", "unknown"])
def test_a_push_outside_a_protected_branch_is_refused(workspace: Path,
                                                      variables: dict[str, str]) -> None:
    rc, out, log = build_images(workspace, **variables)
    assert rc == 1 and "pushing needs a protected branch's pipeline" in out
    assert log == ""  # not even a login


def test_the_default_branch_pushes_and_records_the_digests_it_pushed(workspace: Path) -> None:
    tag = committed(workspace, "LLMOPS_IMAGE_TAG")
    # Images pinned for earlier inputs: pushed, then a warning (3) until the pin is merged.
    rc, out, log = build_images(workspace, **DEFAULT_BRANCH, LLMOPS_PINNED_IMAGE_TAG="0" * 16,
                                LLMOPS_PIPELINE_IMAGE_DIGEST="sha256:" + "9" * 64)
    assert rc == 3, out
    assert f"stdin:{PASSWORD}" in log  # the password went through stdin ...
    assert all(PASSWORD not in line for line in log.splitlines()
               if not line.startswith("stdin:"))  # ... never as an argument
    digests = {name: pushed_digest(name, tag) for name in ("pipeline", "trainer")}
    for name in digests:
        push = next(c for c in log.splitlines()
                    if c.startswith("manifest push") and f"/{name}:" in c)
        assert push.startswith("manifest push --all --storage-driver vfs --digestfile ")
        assert push.endswith(f" localhost/llmops-{name}:{tag} "
                             f"docker://{REGISTRY_IMAGE}/{name}:{tag}")
    assert (workspace / "images.env").read_text() == (
        f"LLMOPS_PINNED_IMAGE_TAG={tag}\nLLMOPS_PIPELINE_IMAGE_DIGEST={digests['pipeline']}\n"
        f"LLMOPS_TRAINER_IMAGE_DIGEST={digests['trainer']}\n")
    pin = f"bash scripts/image-tag.sh --pin {tag} {digests['pipeline']} {digests['trainer']}"
    assert pin in out
    # No images pinned at all (a fresh clone): no later job could pull one, so it stops here.
    rc, out, _ = build_images(workspace, **DEFAULT_BRANCH)
    assert committed(workspace, "LLMOPS_PIPELINE_IMAGE_DIGEST") == PLACEHOLDER
    assert rc == 1 and pin in out and "no images are pinned yet" in out


def test_an_image_the_registry_already_has_under_the_tag_is_built_again(
        workspace: Path) -> None:
    """Any pipeline's job token can push that tag: what it names is never reused."""
    rc, out, log = build_images(workspace, **DEFAULT_BRANCH, FAKE_INSPECT_RC="0")
    assert rc == 1, out  # no images pinned yet (above)
    assert "manifest inspect" not in log
    assert log.count("manifest push --all") == 2


def test_a_stale_tag_is_refused(workspace: Path) -> None:
    rc, out, log = build_images(workspace, **DEFAULT_BRANCH, LLMOPS_IMAGE_TAG="0123456789abcdef")
    assert rc == 1 and "bash scripts/image-tag.sh --write" in out
    assert log == ""


def test_a_placeholder_or_a_tagged_base_image_is_refused(workspace: Path) -> None:
    trainer = workspace / "docker" / "trainer.Dockerfile"
    pinned = trainer.read_text()
    base = re.search(r"(?m)^FROM (\S+)@sha256:", pinned)
    assert base
    for text, said in ((pinned.replace("sha256:" + "ab" * 32, PLACEHOLDER),
                        f"skopeo inspect --format '{{{{.Digest}}}}' docker://{base.group(1)}"),
                       (pinned.replace("@sha256:" + "ab" * 32, ""), "is not pinned by digest")):
        trainer.write_text(text)
        image_tag(workspace, "--write")
        rc, out, log = build_images(workspace, **MERGE_REQUEST)
        assert rc == 1 and said in out, out
        assert log == ""  # nothing built


def test_a_pin_is_only_for_the_current_inputs_and_real_digests(workspace: Path) -> None:
    tag = committed(workspace, "LLMOPS_IMAGE_TAG")
    pipeline, trainer = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    for args, said in (((("0" * 16), pipeline, trainer), "built for 0000000000000000"),
                       ((tag, PLACEHOLDER, trainer), "not the digest of a built image"),
                       ((tag, pipeline, "latest"), "not the digest of a built image")):
        done = image_tag(workspace, "--pin", *args)
        assert done.returncode == 1 and said in done.stderr
        assert committed(workspace, "LLMOPS_PINNED_IMAGE_TAG") == "none"
    done = image_tag(workspace, "--pin", tag, pipeline, trainer)
    assert done.returncode == 0, done.stderr
    assert [committed(workspace, n) for n in (
        "LLMOPS_PINNED_IMAGE_TAG", "LLMOPS_PIPELINE_IMAGE_DIGEST",
        "LLMOPS_TRAINER_IMAGE_DIGEST")] == [tag, pipeline, trainer]


def test_a_release_runs_only_the_images_pinned_for_its_inputs(workspace: Path) -> None:
    """`image-tag.sh --check-pin`, the images-pinned job of tag pipelines."""
    done = image_tag(workspace, "--check-pin")  # a fresh clone: nothing pinned
    assert done.returncode == 1 and "are not pinned" in done.stderr
    tag = committed(workspace, "LLMOPS_IMAGE_TAG")
    pipeline, trainer = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    assert image_tag(workspace, "--pin", tag, pipeline, trainer).returncode == 0
    done = image_tag(workspace, "--check-pin", env={"LLMOPS_PIPELINE_IMAGE_DIGEST": pipeline})
    assert done.returncode == 0, done.stderr
    assert f"pipeline@{pipeline}" in done.stderr
    # A pipeline variable that would make `image:` pull something else.
    done = image_tag(workspace, "--check-pin",
                     env={"LLMOPS_PIPELINE_IMAGE_DIGEST": "sha256:" + "6" * 64})
    assert done.returncode == 1 and "images come only from the committed pin" in done.stderr
    # A lock changed since the pin: the pinned images were built from other locks.
    lock = workspace / "requirements" / "pipeline.lock"
    lock.write_text(lock.read_text() + "\n")
    done = image_tag(workspace, "--check-pin")
    assert done.returncode == 1 and "stale" in done.stderr
    new_tag = image_tag(workspace, "--write").stdout.strip()
    done = image_tag(workspace, "--check-pin")
    assert done.returncode == 1 and f"({new_tag}) are not pinned" in done.stderr
