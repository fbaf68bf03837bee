"""`llmops train`: resume after SIGKILL on tiny (CPU), and the Unsloth backend (GPU only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_release import copy_repo, fresh_home, llmops, mlflow_client

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_same_run(tmp_path: Path, tiny_base: Path) -> None:
    root, home = copy_repo(tmp_path), fresh_home(tmp_path, tiny_base)
    env = {**os.environ, "LLMOPS_ROOT": str(root), "LLMOPS_HOME": str(home),
           "LLMOPS_QUIET_TRAIN": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "llmops.cli", "train", "tiny"], env=env,
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

    done = llmops("train", "tiny", "--resume", root=root, home=home)
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
def test_unsloth_backend_trains_tiny_on_one_gpu(tmp_path: Path, tiny_base: Path) -> None:
    root, home = copy_repo(tmp_path), fresh_home(tmp_path, tiny_base)
    done = llmops("train", "tiny", "--backend", "unsloth", root=root, home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = mlflow_client(home).search_runs(
        [mlflow_client(home).get_experiment_by_name("tiny").experiment_id])
    assert run.data.tags["llmops.train_backend"] == "unsloth"
    assert len(mlflow_client(home).get_metric_history(run.info.run_id, "loss")) >= 10
