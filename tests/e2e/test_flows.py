"""Prefect for real: the data gate's content-keyed cache, and `prefect deployment run`
against the server and worker that `make orchestrator` starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_release import REPO, copy_repo, fresh_home, llmops, mlflow_client

pytestmark = pytest.mark.e2e

CACHE_PROBE = """
import json, sys
sys.path.insert(0, {root!r})
from llmops.cli import _embedded_env
_embedded_env()
from llmops import stages
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


def test_validate_flow_is_cached_until_an_input_changes(tmp_path: Path,
                                                        tiny_base: Path) -> None:
    root, home = copy_repo(tmp_path), fresh_home(tmp_path, tiny_base)
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
        tmp_path: Path, tiny_base: Path) -> None:
    home = fresh_home(tmp_path, tiny_base)
    port = free_port()
    env = {**os.environ, "LLMOPS_HOME": str(home), "PREFECT_PORT": str(port),
           "LLMOPS_QUIET_TRAIN": "1"}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "LLMOPS_ROOT"):
        env.pop(var, None)
    log = tmp_path / "orchestrator.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "scripts/orchestrator.sh"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while "run one with" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(2)
        api = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
        run = subprocess.run([str(REPO / ".venv/bin/prefect"), "deployment", "run",
                              "release/manual", "--param", "model=tiny", "--watch",
                              "--watch-timeout", "1800"], env=api, cwd=REPO,
                             capture_output=True, text=True, timeout=1900)
        assert run.returncode == 0, run.stdout[-3000:] + log.read_text()[-3000:]
        assert "Completed" in run.stdout
        listed = subprocess.run([str(REPO / ".venv/bin/prefect"), "flow-run", "ls"],
                                env={**api, "COLUMNS": "250"}, cwd=REPO,
                                capture_output=True, text=True)
        assert "tiny-0.1.0" in listed.stdout  # the flow run is named after the version
        mv = mlflow_client(home).get_model_version_by_alias("tiny", "local")
        assert mv.tags["version"] == "0.1.0"
        record = json.loads((home / "deployments" / "tiny-local.json").read_text())
        assert record["version"] == "0.1.0"
    finally:
        llmops("stop", "tiny", root=REPO, home=home)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
