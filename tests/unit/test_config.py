"""Config loading: every YAML in the repo validates; bad input names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmops.config import (
    DeployConfig,
    RegistryPins,
    ValidationConfig,
    known_models,
    load_deploy,
    load_model,
)
from llmops.config.yamlfile import load_model_file
from llmops.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = {"validation": ValidationConfig, "deploy": DeployConfig, "registry": RegistryPins}
# deploy/monitoring/ holds Prometheus' files, not targets: each is read by its own checker.
MONITORING = {
    "alerts.yml": "promtool check rules (tests/e2e/test_monitoring.py)",
    "alerts.test.yml": "promtool test rules (tests/e2e/test_monitoring.py)",
    "prometheus-adapter.yml": "tests/unit/test_autoscaling.py, promtool on its queries",
    "scrape-config.yml": "tests/unit/test_autoscaling.py (the labels the queries use)",
}


@pytest.mark.parametrize(
    "path", sorted(p for folder in SCHEMAS for p in (REPO / folder).rglob("*.yml")),
    ids=lambda p: str(p.relative_to(REPO)))
def test_every_declarative_yaml_validates(path: Path) -> None:
    folder = path.relative_to(REPO).parts[0]
    if path.parent == REPO / "validation" / "probes":  # safety probes, not a model's suite
        from llmops.evaluation.probes import ProbeSet

        load_model_file(path, ProbeSet)
        return
    if path.parent == REPO / "deploy" / "monitoring":
        assert path.name in MONITORING, f"{path.name}: no check reads it; add one"
        assert yaml.safe_load(path.read_text())
        return
    load_model_file(path, SCHEMAS[folder])


def test_the_sweep_finds_every_folder() -> None:
    # A sweep that silently lists only one folder checks nothing (torchtune's slip).
    for folder in SCHEMAS:
        assert list((REPO / folder).rglob("*.yml")), folder


@pytest.mark.usefixtures("repo_copy")
def test_every_model_loads_across_its_folders() -> None:
    assert set(known_models()) >= {"tiny", "support-bot"}
    for name in known_models():
        spec = load_model(name)
        assert spec.datasets and spec.golden_paths()
        assert load_deploy("local").serve_for(name, None).max_model_len >= spec.sequence_len


@pytest.mark.usefixtures("repo_copy")
def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown model 'nope'; known models: .*support-bot"):
        load_model("nope")


def test_malformed_yaml_names_file_and_line(repo_copy: Path) -> None:
    path = repo_copy / "validation" / "tiny.yml"
    path.write_text("data:\n  min_examples: [1\n")
    with pytest.raises(UsageError, match=r"validation/tiny.yml:\d+: malformed YAML"):
        load_model("tiny")


def test_unknown_key_names_file_line_and_key(repo_copy: Path) -> None:
    path = repo_copy / "validation" / "tiny.yml"
    path.write_text(path.read_text().replace("min_examples:", "min_exampels:"))
    with pytest.raises(UsageError, match=r"validation/tiny.yml:6: data.min_exampels: Extra"):
        load_model("tiny")


def test_missing_dataset_names_the_axolotl_file_and_key(repo_copy: Path) -> None:
    (repo_copy / "datasets" / "support-bot" / "eval.jsonl").unlink()
    with pytest.raises(UsageError, match=r"axolotl_configs/tiny.yml:\d+: test_datasets.0.path: "
                                         r"datasets/support-bot/eval.jsonl not found"):
        load_model("tiny")


def test_per_model_serve_override_is_validated(repo_copy: Path) -> None:
    path = repo_copy / "deploy" / "local.yml"
    path.write_text(path.read_text().replace("max_model_len: 512", "max_model_len: -3"))
    with pytest.raises(Exception, match="max_model_len"):
        load_deploy("local").serve_for("tiny", None)


def test_the_axolotl_yaml_is_typed_where_the_pipeline_reads_it(repo_copy: Path) -> None:
    from llmops.config.axolotl import AxolotlConfig

    spec = load_model("tiny")
    assert isinstance(spec.axolotl, AxolotlConfig)
    assert spec.base_model == spec.axolotl.base_model and spec.axolotl.lora_rank == 16
    # Every key reaches Axolotl as written, in the file's order, unset defaults left out.
    import yaml

    written = yaml.safe_load((repo_copy / "axolotl_configs" / "tiny.yml").read_text())
    assert spec.axolotl.as_dict() == written
    assert list(spec.axolotl.as_dict()) == list(written)
    cfg = repo_copy / "axolotl_configs" / "tiny.yml"
    cfg.write_text(cfg.read_text().replace("sequence_len:", "sequence_len: long #"))
    with pytest.raises(UsageError, match=r"tiny\.yml:\d+: sequence_len: Input should be a "
                       r"valid integer"):
        load_model("tiny")
