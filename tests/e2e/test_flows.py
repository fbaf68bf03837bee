"""Prefect for real: the data gate's content-keyed cache, and `prefect deployment run`
against the server and worker that `make orchestrator` starts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

CACHE_PROBE = """
import json, sys
sys.path.insert(0, {root!r})
from llmops.cli.main import _embedded_env
_embedded_env()
from llmops.stages import data as stages
calls = []
real = stages.validate_model_data
stages.validate_model_data = lambda *a, **k: calls.append(1) or real(*a, **k)
from flows.validate import validate
validate("tiny")
validate("tiny")
unchanged = len(calls)
train = {train!r}
with open(train, "a") as fh:
    fh.write(json.dumps({{"messages": [{{"role": "user", "content": "Is there a dark mode?"}},
                         {{"role": "assistant", "content": "Yes, under Settings."}}]}}) + "\\n")
validate("tiny")
print("CALLS", json.dumps([unchanged, len(calls)]))
"""


def test_validate_flow_is_cached_until_an_input_changes(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path]) -> None:
    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    train = root / "datasets" / "support-bot" / "train.jsonl"
    env = {**os.environ, "LLMOPS_ROOT": str(root), "LLMOPS_HOME": str(home)}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME"):
        env.pop(var, None)
    done = subprocess.run([sys.executable, "-c", CACHE_PROBE.format(root=str(root),
                                                                    train=str(train))],
                          env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("CALLS"))
    # Run 2 is a cache hit (no validation); run 3 sees a changed dataset and validates.
    assert json.loads(line.removeprefix("CALLS ")) == [1, 2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_prefect_deployment_run_releases_tiny_through_a_local_worker(
        tmp_path: Path, repo_root: Path, fresh_home: Callable[[Path], Path],
        run_llmops: Callable[..., subprocess.CompletedProcess[str]],
        mlflow_client: Callable[[Path], Any]) -> None:
    home = fresh_home(tmp_path)
    port = free_port()
    env = {**os.environ, "LLMOPS_HOME": str(home), "PREFECT_PORT": str(port),
           "LLMOPS_QUIET_TRAIN": "1"}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "LLMOPS_ROOT"):
        env.pop(var, None)
    log = tmp_path / "orchestrator.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "scripts/orchestrator.sh"], cwd=repo_root, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while "run one with" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(2)
        api = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
        run = subprocess.run([str(repo_root / ".venv/bin/prefect"), "deployment", "run",
                              "release/manual", "--param", "model=tiny", "--watch",
                              "--watch-timeout", "1800"], env=api, cwd=repo_root,
                             capture_output=True, text=True, timeout=1900)
        assert run.returncode == 0, run.stdout[-3000:] + log.read_text()[-3000:]
        assert "Completed" in run.stdout
        listed = subprocess.run([str(repo_root / ".venv/bin/prefect"), "flow-run", "ls"],
                                env={**api, "COLUMNS": "250"}, cwd=repo_root,
                                capture_output=True, text=True)
        assert "tiny-0.1.0" in listed.stdout  # the flow run is named after the version
        mv = mlflow_client(home).get_model_version_by_alias("tiny", "local")
        assert mv.tags["version"] == "0.1.0"
        record = json.loads((home / "deployments" / "tiny-local.json").read_text())
        assert record["version"] == "0.1.0"
    finally:
        run_llmops("stop", "tiny", root=repo_root, home=home)
        os.kill(proc.pid, signal.SIGTERM)  # the script stops its worker, then its server
        try:
            proc.wait(timeout=180)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


API_PROBE = """
import json, os
from pathlib import Path
from llmops.orchestration.prefect_api import start_local_api
api = start_local_api(Path(os.environ["PREFECT_HOME"]) / "api.log")
api.wait_healthy()
from prefect import flow
@flow(flow_run_name="probe-run")
def probe():
    return 42
assert probe() == 42
import httpx
runs = httpx.post(api.url + "/flow_runs/filter", json={}).json()
print("PROBE", json.dumps({"env": os.environ["PREFECT_API_URL"] == api.url,
                           "runs": [r["name"] for r in runs], "pid": api.process.pid}))
"""


def test_llmops_started_prefect_api_serves_the_flows_and_stops_at_exit(
        tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-c", API_PROBE], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(next(x for x in done.stdout.splitlines()
                            if x.startswith("PROBE")).removeprefix("PROBE "))
    # The flow ran against the server llmops started, not one Prefect started on its own.
    assert probe["env"] and probe["runs"] == ["probe-run"]
    with pytest.raises(ProcessLookupError):  # stopped when the process exited
        os.kill(probe["pid"], 0)


def test_a_prefect_api_that_cannot_start_is_reported_with_its_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.errors import StageFailed
    from llmops.orchestration.prefect_api import start_local_api

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    # A database nobody listens on (port 1): the server's start-up fails and it exits.
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL",
                       "postgresql+asyncpg://llmops:hunter2@127.0.0.1:1/prefect")
    api = start_local_api(tmp_path / "api.log")
    assert api is not None
    with pytest.raises(StageFailed, match=r"exited with code \d+ before becoming healthy; its "
                       r"log is .*api\.log(.|\n)*Connect call failed(.|\n)*set PREFECT_API_URL",
                       ) as failed:
        api.wait_healthy(timeout_s=120)
    assert "hunter2" not in str(failed.value)
    assert api.process.poll() is not None


def test_no_prefect_api_is_started_when_one_is_configured(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from llmops.orchestration.prefect_api import start_local_api

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert start_local_api(tmp_path / "api.log") is None
    assert not (tmp_path / "api.log").exists()
