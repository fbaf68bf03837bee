"""`llmops train`: resume after SIGKILL on tiny (CPU), and the Unsloth backend (GPU only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
RunLlmops = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_same_run(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path], run_llmops: RunLlmops,
        mlflow_client: Callable[[Path], Any]) -> None:
    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    env = {**os.environ, "LLMOPS_ROOT": str(root), "LLMOPS_HOME": str(home),
           "LLMOPS_QUIET_TRAIN": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "llmops.cli.main", "train", "tiny"], env=env,
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 900
    runs = home / "runs" / "tiny"
    while not list(runs.glob("*/checkpoint-30/trainer_state.json")):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and Axolotl, mid-way, no clean-up
    proc.wait()
    [run_dir] = list(runs.iterdir())
    assert not (run_dir / "adapter_model.safetensors").exists()  # not finished

    done = run_llmops("train", "tiny", "--resume", root=root, home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming run {run_dir.name} from checkpoint-30" in done.stdout
    client = mlflow_client(home)
    runs_seen = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [r.info.run_id for r in runs_seen] == [run_dir.name]  # no second run
    assert runs_seen[0].info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(run_dir.name, "loss")}
    assert steps == set(range(1, 61))  # every step of the 60, none beyond: same total
    assert (run_dir / "adapter_model.safetensors").is_file()


@pytest.mark.gpu
def test_unsloth_backend_trains_tiny_on_one_gpu(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path], run_llmops: RunLlmops,
        mlflow_client: Callable[[Path], Any]) -> None:
    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    done = run_llmops("train", "tiny", "--backend", "unsloth", root=root, home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = mlflow_client(home).search_runs(
        [mlflow_client(home).get_experiment_by_name("tiny").experiment_id])
    assert run.data.tags["llmops.train_backend"] == "unsloth"
    assert len(mlflow_client(home).get_metric_history(run.info.run_id, "loss")) >= 10


def start_mlflow_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    with open(home / f"mlflow-server-{time.time():.0f}.log", "w") as log:  # the server's copy
        proc = subprocess.Popen(                                             # stays open
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{home / 'server.db'}",
             "--artifacts-destination", str(home / "server-artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    import httpx

    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
        time.sleep(1)


@pytest.mark.slow
def test_tracking_outage_mid_training_loses_no_metric(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path]) -> None:
    import socket

    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(home, port)
    # MLflow's own client settings (retries with backoff): logging is asynchronous, so
    # training does not wait; what the retries cannot deliver, the backfill replays.
    env = {**os.environ, "LLMOPS_ROOT": str(root), "LLMOPS_HOME": str(home),
           "LLMOPS_QUIET_TRAIN": "1", "MLFLOW_TRACKING_URI": uri}
    train = subprocess.Popen([sys.executable, "-m", "llmops.cli.main", "train", "tiny"], env=env,
                             cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not list((home / "runs" / "tiny").glob("*/checkpoint-30/trainer_state.json")):
            assert train.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        os.killpg(server.pid, signal.SIGKILL)  # the tracking server goes away mid-run
        server.wait()
        time.sleep(10)
        server = start_mlflow_server(home, port)  # and comes back (same store)
        out, _ = train.communicate(timeout=900)
        assert train.returncode == 0, out[-3000:]  # training went on
        import mlflow

        client = mlflow.MlflowClient(uri)
        [run] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
        assert steps == list(range(1, 61))  # every step once: nothing lost, nothing doubled
    finally:
        if train.poll() is None:
            os.killpg(train.pid, signal.SIGKILL)
        os.killpg(server.pid, signal.SIGTERM)
