"""Orchestration overhead: the wall time of `llmops release tiny` minus the time spent
inside the stages' own code, with Prefect's start-up on its own.

The release runs as a user runs it (a fresh process, Prefect's ephemeral API, a scratch
LLMOPS_HOME with the tiny base model copied in). Each stage function measures its own
time; the CLI writes both into `release_summary.json`. Beside it, in the same script, the
baseline cost of Prefect alone: a no-op flow in a fresh process and a fresh Prefect home.

    .venv/bin/python benchmarks/orchestration.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOOP_FLOW = "from prefect import flow\n@flow\ndef noop():\n    return 1\nnoop()\n"


def scratch_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "LLMOPS_HOME": str(home), "LLMOPS_ROOT": str(ROOT),
           "LLMOPS_QUIET_TRAIN": "1", "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        env.pop(var, None)
    return env


def prefect_alone(home: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", NOOP_FLOW], env=scratch_env(home), check=True,
                   capture_output=True)
    return time.perf_counter() - started


def release(home: Path) -> dict[str, object]:
    tiny = ROOT / ".llmops" / "models" / "tiny-llama"
    if tiny.is_dir():
        shutil.copytree(tiny, home / "models" / "tiny-llama")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "llmops.cli", "release", "tiny"],
                          env=scratch_env(home), cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"release failed:\n{done.stderr[-3000:]}")
    [summary] = (home / "runs" / "tiny").glob("*/release_summary.json")
    body = json.loads(summary.read_text())
    body["process_wall_s"] = wall
    subprocess.run([sys.executable, "-m", "llmops.cli", "stop", "tiny"],
                   env=scratch_env(home), cwd=ROOT, capture_output=True)
    return dict(body)


def main() -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        noop = prefect_alone(Path(a))
        s = release(Path(b))
    work = s["work_seconds"]
    assert isinstance(work, dict)
    wall = float(s["process_wall_s"])  # type: ignore[arg-type]
    inside = sum(work.values())
    by_stage = {**work, "config": work.get("check-config", 0.0),
                "validate": work.get("check-data", 0.0) + work.get("record-data", 0.0)}
    print(f"{'stage':<10} {'task s':>8} {'inside s':>9}")
    for stage, sec in s["seconds"].items():  # type: ignore[union-attr]
        print(f"{stage:<10} {sec:>8.1f} {by_stage.get(stage, 0.0):>9.1f}")
    print(f"process wall {wall:.1f} s; inside the stages {inside:.1f} s; orchestration and "
          f"start-up {wall - inside:.1f} s = {(wall - inside) / wall:.1%} of the wall time")
    print(f"of which until the flow began (imports + Prefect's ephemeral API): "
          f"{s['prefect_start_s']:.1f} s; a no-op Prefect flow alone, fresh home: {noop:.1f} s")


if __name__ == "__main__":
    main()
