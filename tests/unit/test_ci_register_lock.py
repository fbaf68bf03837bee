"""In CI, registrations run one at a time: the job that registers holds a resource group
(the local lock of the MLflow registry only guards one machine)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_every_job_that_registers_holds_a_resource_group() -> None:
    registering = {}
    for path in [REPO / ".gitlab-ci.yml", *sorted((REPO / "pipelines").glob("*.yml"))]:
        for name, job in (yaml.safe_load(path.read_text()) or {}).items():
            if isinstance(job, dict) and any("llmops register " in line
                                             for line in job.get("script") or []):
                registering[name] = job
    assert registering, "no job runs `llmops register`: the check would pass vacuously"
    unguarded = [name for name, job in registering.items() if not job.get("resource_group")]
    assert not unguarded, f"jobs registering without a resource_group: {unguarded}"
