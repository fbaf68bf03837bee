"""A registered version without a training: the evidence files `build_package` writes
(placeholder weights), an MLflow run to point at, lineage tags with CI's, and a verified
deploy in the local history. For the tests of the commands that read a registered version
(lineage, release-notes, deploy --render), in MLflow's registry or GitLab's (emulator)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SECRET = "glpat-Lineage0Secret0Value"
CI = {"gitlab.CI_PIPELINE_ID": "77", "gitlab.CI_JOB_ID": "42",
      "gitlab.CI_PIPELINE_URL": "https://gl.example/group/llmops/-/pipelines/77",
      # a URL that leaked a token into a tag: the output must not show it
      "gitlab.CI_JOB_URL": f"https://gl.example/group/llmops/-/jobs/42?private_token={SECRET}",
      "gitlab.CI_COMMIT_TAG": "v0.1.0"}


def version_folder(base: Path) -> Path:
    """A registered version's files, as `build_package` writes them (no weights needed)."""
    folder = base / "pkg"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "data_report.json").write_text(json.dumps({"datasets": [
        {"path": "datasets/support-bot/train.jsonl", "split": "train", "examples": 412,
         "sha256": "a1" * 32},
        {"path": "datasets/support-bot/eval.jsonl", "split": "eval", "examples": 40,
         "sha256": "b2" * 32}]}))
    (folder / "gate_report.json").write_text(json.dumps({"passed": True, "rules": [
        {"metric": "golden_accuracy", "candidate": 0.82, "threshold": ">= 0.6",
         "passed": True, "reason": "golden_accuracy 0.82 >= 0.6"}]}))
    (folder / "gate_report.md").write_text("## Gate report: support-bot — PASSED\n")
    (folder / "README.md").write_text("# support-bot 0.1.0\n\nA LoRA adapter (model card).\n")
    (folder / "axolotl.yml").write_text("base_model: /m/smollm2\nadapter: lora\nlora_r: 16\n"
                                        "learning_rate: 0.0002\nmax_steps: 60\n")
    (folder / "cost.json").write_text(json.dumps({
        "train": {"device": "cpu", "devices": 1, "seconds": 324.0, "cpu_cores": 2,
                  "device_hours": 0.09},
        "eval": {"device": "cpu", "devices": 1, "seconds": 72.0, "cpu_cores": 2,
                 "device_hours": 0.02}}))
    return folder


def tags(run_id: str) -> dict[str, str]:
    """The lineage tags a release registers a version with (CI's included)."""
    return {"run_id": run_id, "base_model": "/m/smollm2", "base_model.digest": "sha256:base",
            "gate.passed": "true", "mlflow.source.git.commit": "c0ffee" * 6 + "cafe",
            "git.dirty": "false", **CI,
            "cost.train.device": "cpu", "cost.train.devices": "1",
            "cost.train.seconds": "324.0", "cost.train.device_hours": "0.09"}


def a_run(client: Any, artifacts: Path, model: str = "support-bot") -> str:
    """A finished MLflow run of `model` (artifacts under `artifacts`); its id."""
    experiment = client.create_experiment(model, artifacts.as_uri())
    run = client.create_run(experiment, run_name=f"{model}-0.1.0")
    for key, value in {"axolotl.lora_r": "16", "axolotl.learning_rate": "0.0002"}.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, "FINISHED")
    return str(run.info.run_id)


def served(tokens_per_s: float, model: str = "support-bot") -> None:
    """A verified local deploy of 0.1.0 with its load test, priced at 0.10 USD per
    machine-hour, in the history of LLMOPS_HOME."""
    from llmops.serve.history import History

    load = {"requests": 64, "tokens_per_s": tokens_per_s}
    History(model, "local").record("0.1.0", "deploy", "serving",
                         reason=f"load: {load}", fields={"load": load, "serving_cost": {
                             "device": "cpu", "devices": 1, "tokens_per_s": tokens_per_s,
                             "price_per_device_hour": 0.1, "currency": "USD",
                             "cost_per_million_tokens": 0.1 / (tokens_per_s * 3600) * 1e6}})
