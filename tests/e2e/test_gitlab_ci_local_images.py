"""The CI images' cycle run by gitlab-ci-local (shell executor, Buildah faked: it records
its arguments): a merge request that edits the build script builds without logging in or
pushing; the protected default branch pushes and prints the pin; once the pin is merged,
every job of a tag pipeline runs an image by that digest, and a tag whose inputs changed
since is refused. Only the `images` stage runs, in seconds; slow tier because
gitlab-ci-local is installed by `make test-slow` (scripts/setup-ci-tools.sh)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
GCL = Path(".tools") / "node_modules" / ".bin" / "gitlab-ci-local"  # in the repository
PLACEHOLDER = "sha256:" + "0" * 64
PASSWORD = "s3cret-registry-pw"
REGISTRY_IMAGE = "local-registry.gitlab.example.com/ml/llmops"  # gitlab-ci-local's value
TAG_PIPELINE = {"CI_COMMIT_TAG": "v0.1.0", "CI_COMMIT_REF_PROTECTED": "true"}


class Project:
    """A git repository holding the CI configuration and what the images are built from,
    whose origin looks like GitLab, and gitlab-ci-local runs in it."""

    def __init__(self, root: Path, repo: Path, tmp_path: Path) -> None:
        self.root, self.tmp = root, tmp_path
        self.gcl = repo / GCL
        if not self.gcl.exists():
            pytest.fail("gitlab-ci-local is not installed: run `bash scripts/setup-ci-tools.sh`")
        for folder in ("pipelines", "scripts", "docker", "requirements"):
            shutil.copytree(repo / folder, root / folder)
        shutil.copy(repo / ".gitlab-ci.yml", root)
        (root / ".gitignore").write_text(".gitlab-ci-local/\nimages.env\n")
        # NVIDIA's real digest cannot be looked up offline: a stand-in, so the build runs.
        for dockerfile in (root / "docker").glob("*.Dockerfile"):
            text = dockerfile.read_text()
            dockerfile.write_text(text.replace(PLACEHOLDER, "sha256:" + "ab" * 32))
        self.sh("bash", "scripts/image-tag.sh", "--write")
        self.git("init", "-q", "-b", "main")
        self.commit("the project")
        self.git("remote", "add", "origin", "https://gitlab.example.com/ml/llmops.git")
        self.git("update-ref", "refs/remotes/origin/main", "HEAD")  # what `changes:` diffs
        self.git("symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        shutil.copy(repo / "tests" / "fakes" / "buildah", bin_dir / "buildah")
        (bin_dir / "buildah").chmod(0o755)
        self.log = tmp_path / "buildah.log"
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CI_", "LLMOPS_"))},
                    "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    "FAKE_LOG": str(self.log)}

    def sh(self, *argv: str) -> str:
        return subprocess.run(argv, cwd=self.root, check=True, capture_output=True,
                              text=True).stdout

    def git(self, *args: str) -> str:
        return self.sh("git", "-c", "user.name=ci", "-c", "user.email=ci@example.com", *args)

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-qm", message)

    def edit_build_script(self) -> None:
        """What a merge request changes: the build script, and the tag it is hashed into."""
        script = self.root / "scripts" / "build-images.sh"
        script.write_text(script.read_text() + "# a merge request's edit\n")
        self.sh("bash", "scripts/image-tag.sh", "--write")

    def run(self, *args: str, **variables: str) -> tuple[int, str]:
        """gitlab-ci-local with the registry's credentials and the images jobs opted in."""
        self.log.write_text("")
        (self.root / "images.env").unlink(missing_ok=True)
        argv = [str(self.gcl), *args, "--force-shell-executor", "--home", str(self.tmp),
                "--ignore-predefined-vars",
                "CI_PIPELINE_SOURCE,CI_COMMIT_REF_PROTECTED,CI_COMMIT_TAG"]
        if "CI_COMMIT_TAG" in variables or variables.get("CI_PIPELINE_SOURCE") == \
                "merge_request_event":
            argv += ["--unset-variable", "CI_COMMIT_BRANCH"]
        for key, value in {"LLMOPS_CI_LOCAL_IMAGES": "true", "CI_REGISTRY_USER": "gitlab-ci-token",
                           "CI_REGISTRY_PASSWORD": PASSWORD, **variables}.items():
            argv += ["--variable", f"{key}={value}"]
        done = subprocess.run(argv, cwd=self.root, env=self.env, capture_output=True,
                              text=True, timeout=120)
        output = done.stdout + done.stderr
        (self.tmp / f"gcl-{len(list(self.tmp.glob('gcl-*.log')))}.log").write_text(output)
        self.stdout = done.stdout
        return done.returncode, output

    def jobs(self, **variables: str) -> dict[str, dict[str, Any]]:
        """The jobs a pipeline with these variables runs (rules evaluated by gitlab-ci-local)."""
        rc, output = self.run("--list-json", **variables)
        assert rc == 0, output
        listed = json.loads(self.stdout[re.search(r"(?m)^\[", self.stdout).start():])  # type: ignore[union-attr]
        return {job["name"]: job for job in listed if job["when"] != "never"}

    def images(self) -> dict[str, str]:
        """Each job's image, defaults and `extends:` applied by gitlab-ci-local."""
        rc, output = self.run("--preview")
        assert rc == 0, output
        preview = yaml.safe_load(self.stdout[self.stdout.index("---"):])
        return {name: job["image"]["name"] for name, job in preview.items()
                if isinstance(job, dict) and "image" in job}


@pytest.fixture
def project(tmp_path: Path, repo_root: Path) -> Project:
    return Project(tmp_path / "project", repo_root, tmp_path)


def registry_calls(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(("login", "manifest push"))]


def test_a_merge_request_that_edits_the_build_script_pushes_nothing(project: Project) -> None:
    merge_request = {"CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "7"}
    project.git("checkout", "-qb", "edit-build")
    assert "build-images" not in project.jobs(**merge_request)  # no image input changed yet
    project.edit_build_script()
    project.commit("edit the build script")
    assert set(project.jobs(**merge_request)) >= {"build-images", "lint-and-test"}

    rc, output = project.run("--stage", "images", **merge_request)
    log = project.log.read_text()
    assert rc == 0 and "PASS  build-images" in output, output[-4000:]
    assert log.count("build --isolation chroot") == 2  # both images still build ...
    assert registry_calls(log) == []  # ... with no login and no push
    assert PASSWORD not in log + output
    assert REGISTRY_IMAGE not in log
    assert not (project.root / "images.env").exists()
    assert not re.search(r"(?m)^images-pinned\s", output)  # a tag pipeline's job


def test_the_default_branch_pushes_and_a_tag_runs_only_the_pinned_digests(
        project: Project) -> None:
    # The merge request above, merged: the protected default branch builds and pushes.
    project.edit_build_script()
    project.commit("edit the build script")
    tag = yaml.safe_load((project.root / ".gitlab-ci.yml").read_text())["variables"][
        "LLMOPS_IMAGE_TAG"]
    rc, output = project.run("--stage", "images", CI_COMMIT_REF_PROTECTED="true")
    log = project.log.read_text()
    # A fresh clone pins nothing: the job stops the pipeline, saying what to pin.
    assert "FAIL  build-images" in output and "no images are pinned yet" in output, output[-4000:]
    calls = registry_calls(log)
    assert calls[0] == "login -u gitlab-ci-token --password-stdin local-registry.gitlab.example.com"
    assert f"stdin:{PASSWORD}" in log and PASSWORD not in output
    pushes = (re.search(r"--digestfile \S+ \S+ (docker://\S+/(\w+):\S+)$", c) for c in calls[1:])
    pushed = {m[2]: m[1] for m in pushes if m}
    assert pushed == {name: f"docker://{REGISTRY_IMAGE}/{name}:{tag}"
                      for name in ("pipeline", "trainer")}
    recorded = dict(line.split("=", 1) for line in
                    (project.root / "images.env").read_text().splitlines())
    assert recorded["LLMOPS_PINNED_IMAGE_TAG"] == tag
    pin = re.search(r"bash scripts/image-tag\.sh --pin (\S+) (\S+) (\S+)", output)
    assert pin and pin.groups() == (tag, recorded["LLMOPS_PIPELINE_IMAGE_DIGEST"],
                                    recorded["LLMOPS_TRAINER_IMAGE_DIGEST"])

    # A tag before the pin is merged: refused before any job of the release starts.
    rc, output = project.run("--stage", "images", **TAG_PIPELINE)
    assert "FAIL  images-pinned" in output and "are not pinned" in output, output[-4000:]
    assert not re.search(r"(?m)^build-images\s", output)  # tags never build
    assert registry_calls(project.log.read_text()) == []

    # The pin, committed as its merge request would be; then the tag pipeline.
    project.sh("bash", "scripts/image-tag.sh", "--pin", *pin.groups())
    project.commit("pin the CI images")
    rc, output = project.run("--stage", "images", **TAG_PIPELINE)
    assert rc == 0 and "PASS  images-pinned" in output, output[-4000:]
    assert registry_calls(project.log.read_text()) == []
    shipping = project.jobs(**TAG_PIPELINE)
    assert {"register", "deploy-staging", "promote-production", "rollback-production",
            "train"} <= set(shipping)
    images = project.images()
    variables = yaml.safe_load((project.root / ".gitlab-ci.yml").read_text())["variables"]
    for name in shipping:
        image = re.sub(r"\$(\w+)", lambda v: variables.get(v[1], v[0]), images[name])
        if name == "train":
            assert image == f"$CI_REGISTRY_IMAGE/trainer@{recorded['LLMOPS_TRAINER_IMAGE_DIGEST']}"
        elif name == "images-pinned":
            assert re.fullmatch(r"python@sha256:[0-9a-f]{64}", image)
        else:
            assert image == \
                f"$CI_REGISTRY_IMAGE/pipeline@{recorded['LLMOPS_PIPELINE_IMAGE_DIGEST']}", name

    # A lock changed after the pin: the pinned images were built from other inputs.
    lock = project.root / "requirements" / "pipeline.lock"
    lock.write_text(lock.read_text() + "\n")
    project.sh("bash", "scripts/image-tag.sh", "--write")
    project.commit("a new lock")
    rc, output = project.run("--stage", "images", **TAG_PIPELINE)
    assert "FAIL  images-pinned" in output and "are not pinned" in output, output[-4000:]
    # ... until the default branch has built that lock's images: pushed, then a warning
    # (allowed exit 3), its later jobs still in the images pinned before.
    rc, output = project.run("--stage", "images", CI_COMMIT_REF_PROTECTED="true")
    assert rc == 0 and "WARN  build-images" in output, output[-4000:]
    assert f"until then, jobs run the images pinned for {tag}" in output
    assert len(registry_calls(project.log.read_text())) == 3  # a login, two pushes
