"""GitLab CI configuration: valid against GitLab's schema; merge requests never ship."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CI_FILES = [REPO / ".gitlab-ci.yml", *sorted((REPO / "pipelines").glob("*.yml"))]
SHIPPING = re.compile(r"llmops (release|register|deploy|promote|apply-promotion|rollback)\b")


@pytest.mark.parametrize("path", CI_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_ci_file_matches_gitlab_schema(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci",
         str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_pipeline_file_is_included() -> None:
    included = {i["local"] for i in yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
                ["include"]}
    assert included == {f"pipelines/{p.name}" for p in CI_FILES[1:]}


def jobs() -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for path in CI_FILES[1:]:
        found.update({k: v for k, v in yaml.safe_load(path.read_text()).items()
                      if isinstance(v, dict) and "script" in v})
    return found


def merge_request_jobs() -> dict[str, dict[str, object]]:
    return {name: job for name, job in jobs().items()
            if any("merge_request_event" in str(rule.get("if", ""))
                   for rule in job.get("rules", []))}  # type: ignore[union-attr]


def test_no_merge_request_pipeline_registers_or_deploys() -> None:
    mr_jobs = merge_request_jobs()
    assert mr_jobs, "no merge-request job found: the check would pass vacuously"
    for name, job in mr_jobs.items():
        script = "\n".join(job["script"])  # type: ignore[arg-type]
        assert not SHIPPING.search(script), f"{name} ships from a merge request: {script}"


def test_every_job_runs_in_a_declared_stage() -> None:
    stages = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())["stages"]
    wrong = {name: job.get("stage") for name, job in jobs().items()
             if job.get("stage", "test") not in stages}
    assert not wrong, f"jobs in undeclared stages: {wrong}"


def test_merge_requests_check_configs_and_the_data_they_change() -> None:
    scripts = "\n".join("\n".join(job["script"])  # type: ignore[arg-type]
                        for job in merge_request_jobs().values())
    assert "make test" in scripts  # lint and tests
    assert "llmops check-config" in scripts
    assert 'llmops validate-data --changed-since "$CI_MERGE_REQUEST_DIFF_BASE_SHA"' in scripts


def test_every_secret_llmops_reads_is_listed_as_masked_and_protected() -> None:
    """The comment a platform team follows when it sets the CI/CD variables names every
    credential the jobs read (CI_* ones are GitLab's own), and the cluster context."""
    from llmops.redact import PIPELINE_SECRETS

    text = (REPO / ".gitlab-ci.yml").read_text()
    after = text.split("# Masked and protected CI/CD variables", 1)[1]
    block = re.split(r"\n(?! *#)", after, maxsplit=1)[0]  # up to the first line not a comment
    listed = set(re.findall(r"\b[A-Z][A-Z0-9_]{3,}\b", block))
    wanted = {n for n in PIPELINE_SECRETS if not n.startswith("CI_")} | {
        "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "KUBE_CONTEXT"}
    assert not wanted - listed, f"not listed as masked and protected: {wanted - listed}"


# The project's images by their pinned digests; anything else by a literal digest.
PINNED_IMAGE = re.compile(r"\$CI_REGISTRY_IMAGE/(pipeline|trainer)@\$LLMOPS_(PIPELINE|TRAINER)"
                          r"_IMAGE_DIGEST|[\w.-]+(/[\w.-]+)*@sha256:[0-9a-f]{64}")


def ci_variables() -> dict[str, str]:
    return yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())["variables"]


def test_every_job_runs_an_image_by_digest() -> None:
    """A tag can be pushed by any pipeline's job token, a merge request's included; the
    runner pulls a digest's content or nothing."""
    default = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())["default"]["image"]
    images = {name: job.get("image", default) for name, job in jobs().items()}
    assert len(images) > 10 and "build-images" in images and "images-pinned" in images
    for name, image in images.items():
        assert PINNED_IMAGE.fullmatch(str(image)), f"{name} runs {image}, not by digest"
        project = re.match(r"\$CI_REGISTRY_IMAGE/(\w+)@\$(\w+)", str(image))
        assert not project or project[2] == f"LLMOPS_{project[1].upper()}_IMAGE_DIGEST"
    variables = ci_variables()
    for name in ("LLMOPS_PIPELINE_IMAGE_DIGEST", "LLMOPS_TRAINER_IMAGE_DIGEST"):
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", variables[name]), name


def test_only_the_protected_default_branch_pushes_images() -> None:
    """Merge requests build (LLMOPS_PUSH_IMAGES false, no credentials used); a push needs
    the protected default branch and images not pinned yet; tags never build."""
    job = jobs()["build-images"]
    assert job["stage"] == yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())["stages"][0]
    assert job["script"] == ["bash scripts/build-images.sh"]
    assert job["allow_failure"] == {"exit_codes": [3]}  # pushed, awaiting its pin
    assert job["artifacts"]["paths"] == ["images.env"]
    rules: list[dict[str, object]] = job["rules"]  # type: ignore[assignment]
    # never under gitlab-ci-local (GITLAB_CI=false) unless a test opts in: no registry there
    assert rules[0] == {"if": '$GITLAB_CI == "false" && $LLMOPS_CI_LOCAL_IMAGES != "true"',
                        "when": "never"}
    pushes = [r for r in rules[1:] if r["variables"] == {"LLMOPS_PUSH_IMAGES": "true"}]
    builds = [r for r in rules[1:] if r["variables"] == {"LLMOPS_PUSH_IMAGES": "false"}]
    assert len(pushes) == 1 and len(builds) == 1 and len(rules) == 3
    assert "merge_request_event" in str(builds[0]["if"])
    condition = str(pushes[0]["if"])
    for term in ('$CI_COMMIT_REF_PROTECTED == "true"', "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH",
                 "$LLMOPS_PINNED_IMAGE_TAG != $LLMOPS_IMAGE_TAG"):
        assert term in condition
    assert "||" not in condition and "CI_COMMIT_TAG" not in str(rules)
    files = subprocess.run(["bash", "scripts/image-tag.sh", "--files"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for rule in (pushes[0], builds[0]):
        for path in files:
            assert any(fnmatch.fnmatch(path, glob) for glob in rule["changes"]), path  # type: ignore[attr-defined]


def test_a_tag_pipeline_checks_its_pin_before_any_job_runs() -> None:
    """images-pinned (stage images, the first) refuses a release whose inputs' images are
    not pinned; no tag job may skip the stage order with `needs:`."""
    all_jobs = jobs()
    job = all_jobs["images-pinned"]
    assert job["stage"] == "images" and job["script"] == ["bash scripts/image-tag.sh --check-pin"]
    assert job["before_script"] == []  # nothing of the project's runs before the check
    tag_rule = {"if": r"$CI_COMMIT_TAG =~ /^v\d+\.\d+\.\d+$/"}
    assert job["rules"][1:] == [tag_rule]  # type: ignore[index]
    stages = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())["stages"]
    tag_jobs = {name: j for name, j in all_jobs.items() if j.get("stage") != "images" and (
        ".tag" in str(j.get("extends", "")) or any(
            str(r.get("if", "")).startswith("$CI_COMMIT_TAG")
            for r in j.get("rules", [])))}  # type: ignore[union-attr]
    assert {"train", "register", "promote-production", "rollback-production"} <= set(tag_jobs)
    for name, tag_job in tag_jobs.items():
        assert stages.index(tag_job["stage"]) > 0, name
        assert "needs" not in tag_job, f"{name}: `needs:` would start it before images-pinned"


def test_production_deploys_only_what_its_pin_names() -> None:
    """No job deploys a version to production by name: a tag's production job opens the
    promotion merge request, and only a change of production's pin file deploys, the pins
    whose version does not serve yet."""
    production = re.compile(r'--(env|to) "?\$PRODUCTION_ENV"?|--(env|to) production\b')
    deploying = {name: "\n".join(job["script"])  # type: ignore[arg-type]
                 for name, job in jobs().items()
                 if production.search(script := "\n".join(job["script"]))  # type: ignore[arg-type]
                 and SHIPPING.search(script)}
    assert set(deploying) == {"promote-production", "apply-promotion", "rollback-production"}
    for name, script in deploying.items():
        assert "llmops deploy" not in script, f"{name} deploys a version by name: {script}"
    assert deploying["promote-production"].endswith(
        'llmops promote "$MODEL" "${CI_COMMIT_TAG#v}" --to "$PRODUCTION_ENV"')
    assert deploying["apply-promotion"].endswith(
        'llmops apply-promotion --env "$PRODUCTION_ENV" --deploy')
    [rule] = jobs()["apply-promotion"]["rules"]  # type: ignore[misc]
    assert rule["changes"] == ["registry/$PRODUCTION_ENV.yml"]  # not every registry/ change


@pytest.mark.parametrize(("budget_s", "slow_runs"), [(3600, True), (1, False)])
def test_ci_runs_the_slow_tier_only_where_it_fits(tmp_path: Path, budget_s: int,
                                                  slow_runs: bool) -> None:
    """.ci/run always runs the README's test command; the slow tier follows when the
    default tier left room for it in the budget, and its absence is said, not silent."""
    import os
    import shutil
    import subprocess

    (tmp_path / ".ci").mkdir()
    shutil.copy2(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    fake = tmp_path / "bin" / "make"
    fake.parent.mkdir()
    fake.write_text('#!/bin/bash\necho "make $*"\n[ "$1" = test ] && sleep 1\nexit 0\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
           "LLMOPS_CI_BUDGET_S": str(budget_s)}
    done = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "make test"
    assert ("make test-slow" in done.stdout) is slow_runs
    assert ("make test-slow not run" in done.stderr) is not slow_runs
