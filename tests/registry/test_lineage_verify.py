"""`llmops lineage <model> <version> --verify`: the signature against each environment's
trusted signers, and every digest of the version's provenance statement this machine can
reach (the files, the datasets and locks in the checkout, the gate report, the training
run), naming what it could not check (images, a base model elsewhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from registered_version import a_run, tags, version_folder

from llmops.digests import sha256_file
from llmops.registry import provenance

IMAGE = "registry.example/g/llmops/pipeline@sha256:" + "ef" * 32


def facts(root: Path, run_id: str) -> provenance.BuildFacts:
    train = root / "datasets" / "support-bot" / "train.jsonl"
    return provenance.BuildFacts(
        model="support-bot", run_id=run_id, commit="", base_model="/m/smollm2",
        base_identity={"base_model.digest": "sha256:" + "0" * 64},
        datasets=[{"path": "datasets/support-bot/train.jsonl", "split": "train",
                   "sha256": sha256_file(train)}],
        locks={"requirements/serve.lock": sha256_file(root / "requirements" / "serve.lock")},
        images={"pipeline": IMAGE}, engine="0.32.0",
        ci={"CI_PIPELINE_URL": "https://gl.example/g/llmops/-/pipelines/77",
            "CI_JOB_NAME": "register"},
        builder="https://gl.example/g/llmops/-/pipelines/77")


@pytest.fixture()
def registered(repo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import mlflow

    from llmops.registry.base import MlflowRegistry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_id = a_run(mlflow.MlflowClient(uri), tmp_path / "artifacts")
    folder = version_folder(tmp_path)
    statement = provenance.write(facts(repo_copy, run_id), folder)
    mv = MlflowRegistry().register("support-bot", folder, run_id, "0.1.0", tags(run_id))
    return {"uri": uri, "run_id": run_id, "mv": mv, "root": repo_copy,
            "statement": json.loads(statement.read_text())}


def verdicts(registered: dict[str, Any]) -> Any:
    from llmops.registry.base import MlflowRegistry
    from llmops.stages import lineage

    return lineage.verify("support-bot", "0.1.0", MlflowRegistry())


def test_the_statement_is_in_toto_slsa_and_names_every_input(
        registered: dict[str, Any]) -> None:
    doc = registered["statement"]
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    assert [s["name"] for s in doc["subject"]] == ["adapter_model.safetensors"]
    deps = {d["name"] for d in doc["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert {"dataset:datasets/support-bot/train.jsonl", "lock:requirements/serve.lock",
            "image:pipeline", "base_model:/m/smollm2"} <= deps
    byproducts = {b["name"] for b in doc["predicate"]["runDetails"]["byproducts"]}
    assert byproducts == {"gate_report.json", f"mlflow_run:{registered['run_id']}"}
    assert doc["predicate"]["runDetails"]["builder"]["version"] == {"vllm": "0.32.0"}


def test_a_faithful_version_verifies_and_names_what_it_could_not_check(
        registered: dict[str, Any]) -> None:
    result = verdicts(registered)
    assert result.signature["local"][0] is True
    assert result.signature["production"][0] is None  # its release key is not committed
    by_what = {c.what: c for c in result.checks}
    assert by_what["file adapter_model.safetensors"].ok is True
    assert by_what["dataset:datasets/support-bot/train.jsonl"].ok is True
    assert by_what["gate_report.json"].ok is True
    assert by_what[f"mlflow_run:{registered['run_id']}"].ok is True
    assert by_what["image:pipeline"].ok is None and IMAGE in by_what["image:pipeline"].detail
    assert by_what["base_model:/m/smollm2"].ok is None  # not on this machine
    assert not result.failed


def test_changed_training_data_is_named(registered: dict[str, Any]) -> None:
    train = registered["root"] / "datasets" / "support-bot" / "train.jsonl"
    train.write_text(train.read_text() + '{"messages": []}\n')
    result = verdicts(registered)
    [changed] = [c for c in result.checks if c.ok is False]
    assert changed.what == "dataset:datasets/support-bot/train.jsonl" and result.failed


def test_the_installed_command_exits_1_when_no_environment_trusts_the_signer(
        registered: dict[str, Any]) -> None:
    """As a release manager runs it: the local key replaced (another machine's, say), so no
    environment accepts the signature."""
    from llmops.config.paths import state_dir
    from llmops.signatures import ensure_local_key, local_key_paths

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    env.update(MLFLOW_TRACKING_URI=registered["uri"], LLMOPS_ROOT=str(registered["root"]),
               LLMOPS_HOME=os.environ["LLMOPS_HOME"])
    argv = [str(Path(sys.executable).parent / "llmops"), "lineage", "support-bot", "0.1.0",
            "--verify"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "local      accepted: key" in done.stdout
    assert "could not be checked here" in done.stdout
    private, public = local_key_paths(state_dir())
    private.unlink()
    public.unlink()
    ensure_local_key(state_dir())  # a new key pair: not the one that signed 0.1.0
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "local      REFUSED" in refused.stdout and "signed by another key" in refused.stdout
    assert "FAILED" in refused.stdout
