"""Orchestration overhead: the wall time of `llmops release tiny` minus the time spent
inside the stages' own code, with Prefect's start-up on its own.

The release runs as a user runs it (a fresh process, Prefect's ephemeral API, a scratch
LLMOPS_HOME with the tiny base model copied in), twice: in a fresh home, then again in the
same home, as a team's next release would, then against a running Prefect server (what
`make orchestrator` starts). The config check runs while Prefect's API starts, so its time
inside the release is inflated by sharing the cores; it is also timed alone, and the
overhead is shown both ways. Each stage function measures its own
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
from collections.abc import Iterator
from contextlib import contextmanager
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


def config_check_alone(home: Path) -> float:
    """The config check in a process of its own, with nothing beside it (its time when the
    CLI runs it while Prefect's API starts is inflated by sharing 2 cores)."""
    code = ("import time; from llmops.config import load_model; "
            "from llmops.stages.data import check_config; s = load_model('tiny'); "
            "t = time.perf_counter(); check_config(s); print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code], env=scratch_env(home), cwd=ROOT,
                          check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


@contextmanager
def prefect_server(home: Path, port: int = 4377) -> Iterator[str]:
    """A long-running Prefect server (what `make orchestrator` starts), already healthy."""
    env = scratch_env(home)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start",
                             "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise SystemExit("the Prefect server did not become healthy in 300 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def release(home: Path, api_url: str | None = None) -> dict[str, object]:
    tiny = ROOT / ".llmops" / "models" / "tiny-llama"
    if tiny.is_dir() and not (home / "models" / "tiny-llama").is_dir():
        shutil.copytree(tiny, home / "models" / "tiny-llama")
    before = set((home / "runs" / "tiny").glob("*/release_summary.json"))
    started = time.perf_counter()
    env = scratch_env(home) | ({"PREFECT_API_URL": api_url} if api_url else {})
    done = subprocess.run([sys.executable, "-m", "llmops.cli.main", "release", "tiny"],
                          env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"release failed:\n{done.stderr[-3000:]}")
    [summary] = set((home / "runs" / "tiny").glob("*/release_summary.json")) - before
    body = json.loads(summary.read_text())
    body["process_wall_s"] = wall
    return dict(body)


def report(label: str, s: dict[str, object], config_alone: float) -> None:
    work = s["work_seconds"]
    assert isinstance(work, dict)
    wall = float(s["process_wall_s"])  # type: ignore[arg-type]
    inside = sum(work.values())
    by_stage = {**work, "config": work.get("check-config", 0.0),
                "validate": work.get("check-data", 0.0) + work.get("record-data", 0.0)}
    print(f"\n{label}\n{'stage':<10} {'task s':>8} {'inside s':>9}")
    for stage, sec in s["seconds"].items():  # type: ignore[union-attr]
        print(f"{stage:<10} {sec:>8.1f} {by_stage.get(stage, 0.0):>9.1f}")
    print(f"process wall {wall:.1f} s; inside the stages {inside:.1f} s; orchestration and "
          f"start-up {wall - inside:.1f} s = {(wall - inside) / wall:.1%} of the wall time")
    print(f"until the flow began: {s['prefect_start_s']:.1f} s (Prefect's API starting "
          f"while the CLI checks the config for {by_stage['config']:.1f} s)")
    fair = wall - (inside - by_stage["config"] + config_alone)
    print(f"counting the config check at its time alone ({config_alone:.1f} s): "
          f"orchestration {fair:.1f} s = {fair / wall:.1%}")


def main() -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        noop = prefect_alone(Path(a))
        config_alone = config_check_alone(Path(b))
        fresh = release(Path(b))  # a first release: new Prefect database, new MLflow store
        warm = release(Path(b))  # the next one in the same home (data gate cached)
        with prefect_server(Path(b)) as url:  # a team's running server: no start-up
            served = release(Path(b), url)
        subprocess.run([sys.executable, "-m", "llmops.cli.main", "stop", "tiny"],
                       env=scratch_env(Path(b)), cwd=ROOT, capture_output=True)
    report("first release, fresh home, ephemeral Prefect API", fresh, config_alone)
    report("second release, same home, ephemeral Prefect API", warm, config_alone)
    report("third release, same home, a running Prefect server", served, config_alone)
    print(f"\nbaseline: a no-op Prefect flow alone, fresh home: {noop:.1f} s")


if __name__ == "__main__":
    main()
