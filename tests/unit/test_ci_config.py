"""GitLab CI configuration: valid against GitLab's schema; merge requests never ship."""

from __future__ import annotations

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
