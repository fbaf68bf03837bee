"""`llmops doctor`: each check can fail, and the command names the ISA and the plan."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmops.stages import doctor


def test_a_missing_serving_environment_and_a_full_disk_fail(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = tmp_path / ".venv-serve" / "bin" / "python"
    monkeypatch.setenv("LLMOPS_SERVE_PYTHON", str(python))
    assert doctor.serving_env_check().ok is False
    assert "make setup" in doctor.serving_env_check().detail
    python.parent.mkdir(parents=True)
    python.touch()
    assert doctor.serving_env_check().ok is True
    monkeypatch.setattr(doctor, "MIN_FREE_DISK_GIB", 1e9)
    assert doctor.disk_check(tmp_path).ok is False
    assert "needs about" in doctor.disk_check(tmp_path).detail
    monkeypatch.setattr(doctor, "MIN_FREE_DISK_GIB", 0.0)
    assert doctor.disk_check(tmp_path / "not-yet").ok is True


def test_base_models_are_checked_without_a_network(repo_copy: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A builder's model and a local folder pass; a Hub id this machine cannot have fails
    with the fix; a path that is not there fails."""
    (repo_copy / "weights").mkdir()
    bases = {"tiny": "weights", "tiny-alpaca": "someorg/not-cached-model",
             "tiny-sharegpt": str(repo_copy / "gone")}
    for name, base in bases.items():
        path = repo_copy / "axolotl_configs" / f"{name}.yml"
        cfg = yaml.safe_load(path.read_text())
        cfg["base_model"] = base
        path.write_text(yaml.safe_dump(cfg))
    from llmops.models import base as models_base

    monkeypatch.setattr(models_base, "unreachable_base_model",
                        lambda base: f"{base}: no copy; point base_model at a local copy")
    checks = {c.name.removeprefix("base model of "): c for c in doctor.base_model_checks()}
    assert checks["support-bot"].ok is True and "built here" in checks["support-bot"].detail
    assert checks["tiny"].ok is True
    assert checks["tiny-alpaca"].ok is False and "local copy" in checks["tiny-alpaca"].detail
    assert checks["tiny-sharegpt"].ok is False and "no such folder" in \
        checks["tiny-sharegpt"].detail
    monkeypatch.setattr(models_base, "unreachable_base_model", lambda base: None)
    assert {c.name: c.ok for c in doctor.base_model_checks()}["base model of tiny-alpaca"]


def test_one_failed_check_fails_the_report(plan_for: object) -> None:
    plan = plan_for("AVX2")  # type: ignore[operator]
    good = doctor.Check("a", True, "")
    assert doctor.DoctorReport(plan, [good, doctor.Check("b", None, "slower")]).ok
    assert not doctor.DoctorReport(plan, [good, doctor.Check("c", False, "missing")]).ok


def test_the_installed_command_names_the_isa_and_the_plan(repo_copy: Path) -> None:
    llmops = Path(sys.executable).parent / "llmops"
    done = subprocess.run([str(llmops), "doctor"], capture_output=True, text=True,
                          timeout=300, cwd=repo_copy)
    said = done.stdout + done.stderr
    assert done.returncode in (0, 1), said
    assert "CPU ISA" in said and "compute plan:" in said
    assert "train " in said and "serve " in said
    assert "base model of support-bot" in said
