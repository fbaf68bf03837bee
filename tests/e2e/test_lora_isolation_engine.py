"""The LoRA isolation harness on the real engine: the serving environment's vLLM CPU, the
tiny base and two random adapters, three server starts. Whether the engine passes is the
finding the report records, not what this test asserts: it asserts that the report is the
engine's real outcome (its version, every answer, checks that follow from them) and that
a failed check turns the verdict off with its reason. tests/unit/test_lora_isolation.py
shows on a fake engine that each check fails when its bug is there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmops.compute import serve_settings
from llmops.config import load_deploy
from llmops.serve.isolation import judge, load_verdict, serving_vllm_version
from llmops.serve.isolation_run import PROMPTS, RUNTIME_SLOTS, check_engine

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_harness_records_what_the_engine_answered(repo_copy: Path, tiny_base: Path,
                                                      tmp_path: Path) -> None:
    home = tmp_path / "state"  # repo_copy's LLMOPS_HOME
    shutil.copytree(tiny_base, home / "models" / "tiny-llama")
    settings = serve_settings(load_deploy("local"), "tiny").model_copy(
        update={"serve": "lora", "quantization": "none", "enforce_eager": True})

    report, path = check_engine(settings, "tiny", cache_dir=tmp_path / "cache")

    assert report.vllm_version == serving_vllm_version()  # the engine that answered
    assert path.name == f"vllm-{report.vllm_version}.json"
    assert load_verdict(report.vllm_version, tmp_path / "cache") == report
    assert set(report.references) == {"base", "a", "b"}
    assert all(len(answers) == len(PROMPTS) for answers in report.references.values())
    waves = {phase: [a for a in report.answers if a.phase == phase]
             for phase in ("wave 1", "wave 2")}
    assert all(len(answers) == 3 * len(PROMPTS) for answers in waves.values())
    assert [c.action for c in report.calls][:4] == ["load", "load", "unload", "reloaded"]
    # The checks are the recorded answers judged again: nothing in them was made up.
    assert report.checks == judge(report.references, report.answers, report.calls,
                                  RUNTIME_SLOTS)
    assert [c.name for c in report.checks] == ["adapters_applied", "no_cross_talk",
                                               "matches_alone", "unload_frees_capacity"]
    assert all(check.evidence and check.detail for check in report.checks)
    failed = [c for c in report.checks if not c.passed]
    assert report.runtime_lora_ok == (not failed)
    for check in failed:
        assert f"{check.name}: {check.detail}" in report.reason
