"""The release record (`llmops lineage`), assembled from fakes: a registry behind the
protocol, a version's files, history events; and what registration and the model card
carry of the compute cost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from llmops.config import load_model
from llmops.config.paths import run_folder
from llmops.config.settings import Settings
from llmops.redact import forget_all, remember
from llmops.registry.base import ModelVersion
from llmops.serve.history import History
from llmops.stages import lineage, registration
from llmops.stages.context import Context

TAGS = {"run_id": "run-1", "base_model": "/models/tiny", "base_model.digest": "sha256:base",
        "gate.passed": "true", "mlflow.source.git.commit": "c0ffee", "git.dirty": "false",
        "gitlab.CI_PIPELINE_ID": "77", "gitlab.CI_JOB_ID": "42",
        "gitlab.CI_PIPELINE_URL": "https://gl.example/p/-/pipelines/77",
        "gitlab.CI_JOB_URL": "https://gl.example/p/-/jobs/42",
        "cost.train.device": "cpu", "cost.train.devices": "1", "cost.train.seconds": "90.0",
        "cost.train.device_hours": "0.025"}


def package(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "data_report.json").write_text(json.dumps({"datasets": [
        {"path": "/repo/datasets/tiny/train.jsonl", "split": "train", "examples": 3,
         "sha256": "ab" * 32},
        {"path": "/repo/datasets/tiny/eval.jsonl", "split": "eval", "examples": 2,
         "sha256": "cd" * 32}]}))
    (folder / "gate_report.json").write_text(json.dumps({"passed": True, "rules": [
        {"metric": "golden_accuracy", "candidate": 0.9, "threshold": ">= 0.5",
         "passed": True, "reason": "golden_accuracy 0.9 >= 0.5"}]}))
    (folder / "gate_report.md").write_text("## Gate report: tiny — PASSED\n")
    (folder / "axolotl.yml").write_text("base_model: /models/tiny\nadapter: lora\nlora_r: 8\n"
                                        "learning_rate: 0.001\nwandb_api_key: hunter2\n")
    (folder / "cost.json").write_text(json.dumps({
        "train": {"device": "cpu", "devices": 1, "seconds": 90.0, "cpu_cores": 2,
                  "device_hours": 0.025},
        "eval": {"device": "cpu", "devices": 1, "seconds": 36.0, "cpu_cores": 2,
                 "device_hours": 0.01}}))
    return folder


class FakeRegistry:
    def __init__(self, folder: Path, tags: dict[str, str]) -> None:
        self.folder, self.tags = folder, tags

    def register(self, *args: Any) -> ModelVersion:
        raise AssertionError("not used")

    def versions(self, name: str) -> list[ModelVersion]:
        return [self.get(name, v) for v in ("0.1.0", "0.10.0", "0.9.1")]

    def get(self, name: str, version: str) -> ModelVersion:
        return ModelVersion(name, version, "3", "gitlab-ml-models:3", "run-1", "sha256:ver",
                            "/models/tiny", dict(self.tags))

    def download(self, mv: ModelVersion, dest: Path) -> Path:
        shutil.copytree(self.folder, dest)
        return dest


@pytest.fixture()
def traced(repo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> lineage.Lineage:
    monkeypatch.setattr(lineage, "read_run", lambda run_id: lineage.TrainingRun(
        run_id, "tiny-0.1.0", "FINISHED", "2025-01-01T10:00:00Z", "2025-01-01T10:02:00Z",
        "tiny", 41))
    # Served locally (with a priced load test), refused in staging, a later version too.
    load = {"tokens_per_s": 50.0, "requests": 64}
    History("tiny", "local").record("0.1.0", "deploy", "serving", reason=f"load: {load}",
                         fields={"load": load, "serving_cost": {
                             "device": "cpu", "devices": 1, "tokens_per_s": 50.0,
                             "price_per_device_hour": 0.1, "currency": "USD",
                             "cost_per_million_tokens": 0.555556}})
    History("tiny", "staging").record("0.1.0", "deploy", "failed", "never ready")
    History("tiny", "local").record("0.2.0", "deploy", "serving")
    reg = FakeRegistry(package(tmp_path / "pkg"), TAGS)
    return lineage.lineage("tiny", "0.1.0", reg)  # type: ignore[arg-type]


def test_the_record_holds_the_whole_chain(traced: lineage.Lineage) -> None:
    r = traced
    assert (r.model, r.version, r.registry_id, r.digest) == ("tiny", "0.1.0", "3", "sha256:ver")
    assert r.base_pin == "sha256:base"
    assert [(Path(d.path).name, d.split, d.sha256) for d in r.datasets] == [
        ("train.jsonl", "train", "ab" * 32), ("eval.jsonl", "eval", "cd" * 32)]
    assert r.run.name == "tiny-0.1.0" and r.run.params == 41
    assert r.config["lora_r"] == 8 and "wandb_api_key" not in r.config
    assert r.commit == "c0ffee" and r.ci["CI_PIPELINE_ID"] == "77"
    assert r.gate_passed is True and r.gate_rules[0]["metric"] == "golden_accuracy"
    assert r.compute["train"]["device_hours"] == 0.025
    assert r.compute["eval"]["device_hours"] == 0.01
    assert [(e.env, e.result) for e in r.deployments] == [("local", "serving"),
                                                          ("staging", "failed")]
    served = r.deployments[0]
    assert served.cost_per_million_tokens == pytest.approx(0.555556)
    assert lineage.serving_cost_line(served) == \
        "50 tokens/s on 1 × cpu, 0.5556 USD per million tokens"
    assert r.deployments[1].detail == "never ready"
    assert json.loads(r.as_json())["datasets"][0]["sha256"] == "ab" * 32


def test_the_printed_record_names_everything_and_no_secret(
        traced: lineage.Lineage, capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    from llmops.cli import output

    remember(["s3cr3t-token-value"])
    try:
        leaky = replace(traced, ci={**traced.ci,
                                    "CI_JOB_URL": "https://gl.example/jobs/42?t=s3cr3t-token-value"})
        output.print_lineage(leaky)
        print(leaky.as_json())
    finally:
        forget_all()
    out = capsys.readouterr().out
    assert "s3cr3t-token-value" not in out and "[REDACTED]" in out
    for expected in ("tiny 0.1.0", "sha256:ver", "ab" * 32, "run-1 (tiny-0.1.0, FINISHED",
                     "lora_r=8", "git commit: c0ffee", "pipelines/77 (id 77)",
                     "gate: PASSED (1 rules)", "training   0.025 device-hours (1 × cpu, 90.0 s)",
                     "evaluation 0.01 device-hours", "0.5556 USD per million tokens",
                     "deploy failed  (never ready)"):
        assert expected in out, (expected, out)


def test_the_latest_version_is_the_default(repo_copy: Path, tmp_path: Path) -> None:
    reg = FakeRegistry(tmp_path, TAGS)
    assert lineage.latest_version("tiny", reg) == "0.10.0"  # type: ignore[arg-type]

    class NoListing:  # GitLab's registry cannot list: the pins and the histories name them
        pass

    History("tiny", "local").record("1.2.0", "deploy", "serving")
    assert lineage.latest_version("tiny", NoListing()) == "1.2.0"  # type: ignore[arg-type]
    with pytest.raises(Exception, match="name one"):
        lineage.latest_version("tiny-alpaca", NoListing())  # type: ignore[arg-type]


class Recording:
    def __init__(self) -> None:
        self.lineage: dict[str, str] = {}
        self.files: set[str] = set()

    def register(self, name: str, folder: Path, run_id: str, version: str | None,
                 lineage: dict[str, str]) -> ModelVersion:
        self.lineage = lineage
        self.files = {p.name for p in folder.iterdir()}
        self.card = (folder / "README.md").read_text()
        return ModelVersion(name, version or "0.1.0", "1", "src", run_id, "sha256:x", "b",
                            dict(lineage))


def test_registration_carries_the_runs_compute_into_the_version_and_card(
        repo_copy: Path) -> None:
    folder = run_folder("tiny", "run-1")
    package(folder.parent / "pkg-src")
    shutil.copytree(folder.parent / "pkg-src", folder)
    for name in ("adapter_config.json", "adapter_model.safetensors", "eval_report.json"):
        (folder / name).write_text(json.dumps({"metrics": {"base": {}, "candidate": {}}}))
    shutil.copy2(folder / "axolotl.yml", folder / "axolotl.resolved.yml")
    ctx = Context(Settings.from_env({"CI_PIPELINE_URL": "https://gl.example/pipelines/77"}))
    ctx.registry = Recording()  # type: ignore[assignment]
    ctx.run_tags = {"mlflow.source.git.commit": "c0ffee", **ctx.settings.ci_tags}  # type: ignore[misc]
    registration.register_stage(load_model("tiny"), "run-1", "0.1.0", ctx)
    got: Recording = ctx.registry  # type: ignore[assignment]
    assert got.lineage["cost.train.device_hours"] == "0.025"
    assert got.lineage["cost.eval.devices"] == "1" and "cost.json" in got.files
    assert "training: 0.025 device-hours (1 × cpu, 90.0 s)" in got.card
    assert "evaluation: 0.01 device-hours" in got.card
    assert "https://gl.example/pipelines/77" in got.card


def test_release_notes_show_the_lineage_and_the_cost(traced: lineage.Lineage,
                                                     tmp_path: Path) -> None:
    folder = tmp_path / "pkg"  # written by `traced`, with its card
    (folder / "README.md").write_text("# tiny\n")
    out = registration.release_notes(load_model("tiny"), "0.1.0", tmp_path / "release",
                                     FakeRegistry(folder, TAGS))  # type: ignore[arg-type]
    notes = (out / "notes.md").read_text()
    for expected in ("- git commit: `c0ffee`", "- CI pipeline: https://gl.example/p/-/pipelines/77",
                     f"sha256 `{'ab' * 32}`", "- release gate: passed",
                     "- training: 0.025 device-hours (1 × cpu, 90.0 s)",
                     "- evaluation: 0.01 device-hours (1 × cpu, 36.0 s)",
                     "- serving in local (", "0.5556 USD per million tokens",
                     "## Gate report: tiny — PASSED"):
        assert expected in notes, (expected, notes)
