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
    """Secret-named keys are hidden and secret-shaped values redacted under any key."""
    from llmops.train.run import log_config_params

    class Client:
        params: dict[str, str] = {}

        def log_batch(self, run_id: str, params: list[Any]) -> None:
            self.params.update({p.key: p.value for p in params})

    client = Client()
    log_config_params(client, "run", {
        "datasets": [{"path": "a.jsonl", "type": "chat_template"}], "lr": 0.1,
        "wandb_key": "0123456789abcdef", "passwd": "hunter22", "credentials": "c-r-e-d",
        "hf_use_auth_token": True, "note": "https://bot:S3cr3tPw@host/x",
        "extra": "token glpat-abcdefghijklmnopqrstuvwxyz"})
    got = client.params
    assert got["axolotl.datasets.0.path"] == "a.jsonl" and got["axolotl.lr"] == "0.1"
    for key in ("wandb_key", "passwd", "credentials"):
        assert got[f"axolotl.{key}"] == "[REDACTED]"
    assert got["axolotl.hf_use_auth_token"] == "True"  # a flag, not a secret
    assert got["axolotl.note"] == "https://[REDACTED]@host/x"
    assert "glpat-" not in got["axolotl.extra"]


@pytest.mark.parametrize("key,value", [
    ("wandb_api_key", "0123456789abcdef"),
    ("hub_token", "hf_abcdefghijklmnop"),
    ("comet_password", "hunter22"),
    ("dataset_note", "https://user:S3cr3tPw@example.com/data"),
    ("notes", "sk-abcdefghijklmnopqrstuvwxyz012345"),
])
def test_a_secret_in_the_training_yaml_is_refused_by_key_never_by_value(
        tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(UsageError) as err:
        check_training_config({**tiny(), key: value}, tmp_path / "bad.yml")
    message = str(err.value)
    assert f"bad.yml: {key}: holds a secret" in message
    assert value not in message and "S3cr3tPw" not in message


def test_trust_remote_code_needs_the_models_explicit_allowance(tmp_path: Path) -> None:
    cfg = {**tiny(), "trust_remote_code": True}
    with pytest.raises(UsageError, match="trust_remote_code: runs Python code"):
        check_training_config(cfg, tmp_path / "x.yml")
    check_training_config(cfg, tmp_path / "x.yml", allow_remote_code=True)


def dataset(**more: Any) -> dict[str, Any]:
    return {"path": "datasets/tiny/train.jsonl", "type": "chat_template", **more}


@pytest.mark.parametrize("value", [True, "true", "True", "yes", "on", "1", 1, 1.0, "y"])
@pytest.mark.parametrize("where,key", [
    ({}, "trust_remote_code"),
    ({"datasets": [dataset(), dataset()]}, "datasets[1].trust_remote_code"),
    ({"test_datasets": [dataset()]}, "test_datasets[0].trust_remote_code"),
    ({"pretraining_dataset": [dataset()]}, "pretraining_dataset[0].trust_remote_code"),
    ({"model_kwargs": {}}, "model_kwargs.trust_remote_code"),  # from_pretrained(**it)
])
def test_trust_remote_code_is_refused_in_every_place_and_truthy_spelling(
        where: dict[str, Any], key: str, value: Any) -> None:
    """Axolotl (pydantic) reads each of these values as true: refused, naming the entry."""
    cfg = {**tiny(), **where}
    *parents, leaf = key.replace("]", "").replace("[", ".").split(".")
    holder: Any = cfg
    for part in parents:
        holder = holder[int(part)] if part.isdigit() else holder[part]
    holder[leaf] = value
    assert [k for k, _ in project_problems(cfg)] == [key]
    assert project_problems(cfg, allow_remote_code=True) == []


@pytest.mark.parametrize("value", [False, None, "false", "off", "no", "0", 0])
def test_trust_remote_code_spelled_false_passes(value: Any) -> None:
    cfg = {**tiny(), "trust_remote_code": value,
           "datasets": [dataset(trust_remote_code=value)]}
    assert project_problems(cfg) == []


def test_axolotls_verdict_is_kept_per_machine_and_redone_for_a_changed_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.train import trainconfig

    monkeypatch.setenv("HOME", str(tmp_path))
    asked: list[dict[str, Any]] = []
    real = trainconfig._validate_with_axolotl

    def counted(cfg: dict[str, Any]) -> list[tuple[str, str]]:
        asked.append(cfg)
        return real(cfg)

    monkeypatch.setattr(trainconfig, "_validate_with_axolotl", counted)
    bad = {**tiny(), "learning_rate": "fast"}
    first = trainconfig.axolotl_problems(bad)
    assert [k for k, _ in first] == ["learning_rate"]
    assert trainconfig.axolotl_problems(bad) == first  # the kept verdict, Axolotl not asked
    assert trainconfig.axolotl_problems(tiny()) == []  # another config: asked
    assert len(asked) == 2
    kept = list((tmp_path / ".cache" / "llmops" / "axolotl-config").glob("*.json"))
    assert len(kept) == 2
    for entry in kept:  # an unreadable entry is a miss, not a verdict
        entry.write_text("{not json")
    assert [k for k, _ in trainconfig.axolotl_problems(bad)] == ["learning_rate"]
    assert len(asked) == 3
