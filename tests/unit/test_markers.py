"""A bare `pytest` skips the slow tier unless -m asks for it, and gpu tests without CUDA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = '''
import pytest

@pytest.mark.slow
def test_slow():
    pass

@pytest.mark.gpu
def test_gpu():
    pass

def test_plain():
    pass
'''


def run(tmp_path: Path, *args: str) -> str:
    tests = tmp_path / "tests"
    tests.mkdir(exist_ok=True)
    root_conftest = Path(__file__).resolve().parents[1] / "conftest.py"
    (tests / "conftest.py").write_text(root_conftest.read_text())
    (tests / "test_probe.py").write_text(PROBE)
    done = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider",
                           "-o", "markers=slow\ngpu", str(tests), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    return done.stdout


def test_bare_pytest_skips_slow_and_gpu_without_cuda(tmp_path: Path) -> None:
    out = run(tmp_path)
    assert "1 passed, 2 skipped" in out
    assert "slow: run with -m slow" in out and "gpu: needs a CUDA device" in out


def test_asking_for_slow_runs_it(tmp_path: Path) -> None:
    out = run(tmp_path, "-m", "slow and not gpu")
    assert "1 passed, 2 deselected" in out


def test_not_slow_deselects_without_running_it(tmp_path: Path) -> None:
    out = run(tmp_path, "-m", "not slow and not gpu")
    assert "1 passed, 2 deselected" in out
