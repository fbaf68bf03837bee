"""`llmops release tiny` through the real flow: Prefect, GX, Axolotl, MLflow, vLLM CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def llmops(
    *args: str, root: Path, home: Path, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMOPS_ROOT": str(root), "LLMOPS_HOME": str(home),
           "LLMOPS_QUIET_TRAIN": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "llmops.cli", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_base(shared_home: Path) -> Path:
    """Build the tiny base model once per session; tests copy it into their own home."""
    from llmops.basemodels import build_tiny_llama

    out = shared_home / "models" / "tiny-llama"
    if not (out / "config.json").is_file():
        old = os.environ.get("LLMOPS_ROOT")
        os.environ["LLMOPS_ROOT"] = str(REPO)
        try:
            build_tiny_llama(out)
        finally:
            os.environ.pop("LLMOPS_ROOT") if old is None else os.environ.update(LLMOPS_ROOT=old)
    return out


def fresh_home(tmp_path: Path, tiny_base: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(tiny_base, home / "models" / "tiny-llama")
    return home


def mlflow_client(home: Path):  # type: ignore[no-untyped-def]
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def test_release_tiny_end_to_end(tmp_path: Path, tiny_base: Path) -> None:
    home = fresh_home(tmp_path, tiny_base)
    done = llmops("release", "tiny", root=REPO, home=home)
    try:
        assert done.returncode == 0, done.stderr[-4000:]
        record = json.loads((home / "deployments" / "tiny-local.json").read_text())
        url = f"http://127.0.0.1:{record['port']}/v1"
        assert url in done.stdout and "curl" in done.stdout

        # MLflow: one run with the training history, the evaluation and the evidence.
        client = mlflow_client(home)
        mv = client.get_model_version_by_alias("tiny", "local")
        assert mv.tags["version"] == record["version"] == "0.1.0"
        run = client.get_run(mv.run_id)
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(mv.run_id, "loss")) >= 10
        assert run.data.metrics["candidate.eval_loss"] < run.data.metrics["base.eval_loss"] - 1
        artifacts = {a.path for a in client.list_artifacts(mv.run_id)}
        assert {"config", "data", "eval", "gate", "model"} <= artifacts
        model_files = {Path(a.path).name for a in client.list_artifacts(mv.run_id, "model")}
        assert {"adapter_model.safetensors", "manifest.json", "README.md"} <= model_files
        assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["train.jsonl", "eval.jsonl"]

        # The endpoint answers through the OpenAI client, with the adapter as the model.
        from openai import OpenAI

        api = OpenAI(base_url=url, api_key="local", max_retries=0)
        assert {"tiny", "tiny-base"} <= {m.id for m in api.models.list().data}
        reply = api.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Who founded Quillbox?"}],
            max_tokens=12, temperature=0)
        assert reply.choices[0].message.content

        status = llmops("status", root=REPO, home=home)
        assert "tiny" in status.stdout and "running" in status.stdout
    finally:
        stopped = llmops("stop", "tiny", "--env", "local", root=REPO, home=home)
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(record["pid"], 0)


def copy_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for folder in ("axolotl_configs", "validation", "deploy", "registry", "datasets", "flows"):
        shutil.copytree(REPO / folder, root / folder)
    return root


def test_failed_gate_registers_nothing_and_starts_no_server(tmp_path: Path,
                                                            tiny_base: Path) -> None:
    root, home = copy_repo(tmp_path), fresh_home(tmp_path, tiny_base)
    gates = root / "validation" / "tiny.yml"
    gates.write_text(gates.read_text().replace("min_gain_over_base: 1.0",
                                               "min_gain_over_base: 100.0"))
    done = llmops("release", "tiny", root=root, home=home)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "failed its release gate" in done.stderr
    assert "FAILED: eval_loss: gain over base" in done.stderr
    client = mlflow_client(home)
    assert client.search_model_versions("name='tiny'") == []
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["gate.passed"] == "false"
    assert not list((home / "deployments").glob("*.json")) if (home / "deployments").exists() \
        else True


def test_bad_data_stops_before_training_and_names_the_lines(tmp_path: Path,
                                                           tiny_base: Path) -> None:
    root, home = copy_repo(tmp_path), fresh_home(tmp_path, tiny_base)
    train = root / "datasets" / "support-bot" / "train.jsonl"
    lines = train.read_text().splitlines()
    lines[2] = json.dumps({"messages": [{"role": "robot", "content": "beep"},
                                        {"role": "assistant", "content": "ok"}]})
    lines[4] = json.dumps({"messages": [{"role": "user", "content": "   "},
                                        {"role": "assistant", "content": "ok"}]})
    lines[6] = "{not json"
    train.write_text("\n".join(lines) + "\n")
    done = llmops("release", "tiny", root=root, home=home)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "data validation failed" in done.stderr
    assert "train.jsonl: roles: 1 failing" in done.stderr and "lines 3\n" in done.stderr
    assert "train.jsonl: content: 1 failing" in done.stderr and "lines 5\n" in done.stderr
    assert "train.jsonl: parse: 1 failing" in done.stderr and "lines 7\n" in done.stderr
    assert not list(home.rglob("train.log"))  # no training started


def test_unknown_model_exits_2_and_lists_known_models(tmp_path: Path) -> None:
    done = llmops("release", "nope", root=REPO, home=tmp_path / "home")
    assert done.returncode == 2
    assert "unknown model 'nope'; known models: support-bot, tiny" in done.stderr


def test_missing_dataset_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    root = copy_repo(tmp_path)
    (root / "datasets" / "support-bot" / "eval.jsonl").unlink()
    done = llmops("release", "tiny", root=root, home=tmp_path / "home")
    assert done.returncode == 2
    assert "axolotl_configs/tiny.yml" in done.stderr and "test_datasets.0.path" in done.stderr
