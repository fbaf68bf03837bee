"""`llmops release` on the same conversations stored in other dataset shapes: ShareGPT keys
with role names of their own (tiny-sharegpt) and alpaca rows (tiny-alpaca). Every stage
(data gate, training, eval loss, golden set, serving) reads them as the Axolotl YAML says."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("model", ["tiny-sharegpt", "tiny-alpaca"])
def test_release_reads_each_dataset_shape_end_to_end(
        model: str, tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path],
        run_llmops: Callable[..., subprocess.CompletedProcess[str]],
        mlflow_client: Callable[[Path], Any]) -> None:
    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    done = run_llmops("release", model, root=root, home=home)
    try:
        assert done.returncode == 0, done.stderr[-4000:]
        record = json.loads((home / "deployments" / f"{model}-local.json").read_text())
        assert record["version"] == "0.1.0"
        # The summary shows the version and the endpoint it serves at.
        assert f"release {model} 0.1.0" in done.stdout
        assert any("version" in line and "0.1.0" in line for line in done.stdout.splitlines())
        url = f"http://127.0.0.1:{record['port']}/v1"
        assert url in done.stdout and "curl" in done.stdout
        # Evaluation read the eval set (it used to read `messages` only).
        mv = mlflow_client(home).get_model_version_by_alias(model, "local")
        metrics = mlflow_client(home).get_run(mv.run_id).data.metrics
        assert metrics["candidate.eval_loss"] < metrics["base.eval_loss"]
    finally:
        stopped = run_llmops("stop", model, "--env", "local", root=root, home=home)
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(record["pid"], 0)
