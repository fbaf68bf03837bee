"""Training configs are refused before any compute, naming the key and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.errors import UsageError
from llmops.train.trainconfig import check_training_config, project_problems

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "axolotl_configs").glob("*.yml"))


def tiny() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "axolotl_configs" / "tiny.yml").read_text()))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_in_the_repo_passes_axolotl_and_our_rules(path: Path) -> None:
    check_training_config(yaml.safe_load(path.read_text()), path)


@pytest.mark.parametrize("change,key", [
    ({"adapter": None}, "adapter"),
    ({"lora_r": 1024}, "lora_r"),
    ({"save_steps": None}, "save_steps"),
    ({"test_datasets": None}, "test_datasets"),
    ({"output_dir": "/tmp/x"}, "output_dir"),
])
def test_each_project_rule_names_its_key(change: dict[str, Any], key: str) -> None:
    cfg = {k: v for k, v in {**tiny(), **change}.items() if v is not None}
    assert [k for k, _ in project_problems(cfg)] == [key]


def test_axolotl_own_validation_names_the_key(tmp_path: Path) -> None:
    cfg = {**tiny(), "lora_r": "sixteen", "learning_rate": "fast"}
    with pytest.raises(UsageError) as err:
        check_training_config(cfg, tmp_path / "bad.yml")
    message = str(err.value)
    assert "bad.yml: lora_r: Input should be a valid integer" in message
    assert "bad.yml: learning_rate: could not convert string to float" in message


def test_config_params_are_flat_and_never_carry_secrets() -> None:
    from llmops.train.run import SECRET_KEYS, flatten

    flat = flatten({"datasets": [{"path": "a.jsonl", "type": "chat_template"}], "lr": 0.1,
                    "mlflow_tracking_uri": "https://u:p@host", "hub_token": "x"})
    assert flat["datasets.0.path"] == "a.jsonl" and flat["lr"] == "0.1"
    assert [k for k in flat if SECRET_KEYS.search(k)] == ["mlflow_tracking_uri", "hub_token"]
