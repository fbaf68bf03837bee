"""The Unsloth backend reads the resolved Axolotl config through its typed training keys
(`AxolotlTraining`), one default per key: what it trains with when the YAML leaves a key
out is what the typed model says, the same wherever the key is used."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import pytest

from llmops.config.axolotl import AxolotlConfig, AxolotlTraining
from llmops.errors import UsageError
from llmops.train import unsloth
from llmops.train.unsloth import unsloth_plan

# The fewest keys a resolved config has: the rest is left to the defaults.
MINIMAL: dict[str, Any] = {
    "base_model": "/models/base", "output_dir": "/out/run", "adapter": "lora",
    "lora_r": 8, "lora_alpha": 16, "learning_rate": "2e-4",  # PyYAML reads 2e-4 as text
    "datasets": [{"path": "/data/train.jsonl", "type": "chat_template"}],
}


def default(key: str) -> Any:
    return AxolotlTraining.model_fields[key].default


def test_an_unset_seed_is_one_seed_for_the_adapter_and_the_trainer() -> None:
    plan = unsloth_plan(MINIMAL)
    assert plan["peft"]["random_state"] == plan["sft"]["seed"] == default("seed") == 42


@pytest.mark.parametrize("seed", [7, None])
def test_a_set_seed_is_used_everywhere_and_null_means_unset(seed: int | None) -> None:
    plan = unsloth_plan({**MINIMAL, "seed": seed})
    expected = 42 if seed is None else seed
    assert plan["peft"]["random_state"] == plan["sft"]["seed"] == expected


def test_unset_keys_take_the_typed_defaults() -> None:
    plan = unsloth_plan(MINIMAL)
    sft, peft = plan["sft"], plan["peft"]
    assert plan["model"]["max_seq_length"] == sft["max_length"] == \
        AxolotlConfig.model_fields["sequence_len"].default  # one default with the data gate
    assert sft["per_device_train_batch_size"] == default("micro_batch_size")
    assert sft["gradient_accumulation_steps"] == default("gradient_accumulation_steps")
    assert sft["lr_scheduler_type"] == default("lr_scheduler")
    assert sft["optim"] == default("optimizer")
    assert sft["num_train_epochs"] == default("num_epochs")
    assert sft["save_steps"] == sft["eval_steps"] == default("save_steps")
    assert sft["logging_steps"] == default("logging_steps")
    assert sft["max_steps"] == -1 and sft["eval_strategy"] == "no"  # no eval set
    assert sft["learning_rate"] == 2e-4 and sft["bf16"] is False
    assert peft["lora_dropout"] == default("lora_dropout")
    assert peft["target_modules"] == ["q_proj", "v_proj"]
    assert peft["use_gradient_checkpointing"] is False
    assert plan["data"]["train"] == [{"path": "/data/train.jsonl", "type": "chat_template"}]


def test_set_keys_are_read_typed() -> None:
    plan = unsloth_plan({**MINIMAL, "max_steps": 30, "save_steps": 10, "eval_steps": 5,
                         "sequence_len": 256, "bf16": "auto", "gradient_checkpointing": True,
                         "test_datasets": [{"path": "/data/eval.jsonl",
                                            "type": "chat_template", "split": "train"}]})
    sft = plan["sft"]
    assert (sft["max_steps"], sft["save_steps"], sft["eval_steps"]) == (30, 10, 5)
    assert sft["max_length"] == plan["model"]["max_seq_length"] == 256
    assert sft["bf16"] is True and sft["eval_strategy"] == "steps"
    assert plan["peft"]["use_gradient_checkpointing"] == "unsloth"
    assert plan["data"]["eval"] == [{"path": "/data/eval.jsonl", "type": "chat_template",
                                     "split": "train"}]


@pytest.mark.parametrize("change,named", [
    ({"lora_r": None}, "lora_r"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"micro_batch_size": "two"}, "micro_batch_size"),
])
def test_a_missing_or_mistyped_key_is_a_usage_error_naming_it(change: dict[str, Any],
                                                               named: str) -> None:
    with pytest.raises(UsageError, match=named):
        unsloth_plan({**MINIMAL, **change})


def test_the_translation_has_no_defaults_of_its_own() -> None:
    """Every default lives in AxolotlTraining: the translation reads typed attributes, never
    `cfg.get(key, default)` (two such defaults once disagreed: seed 3407 and 42)."""
    tree = ast.parse(inspect.getsource(unsloth.unsloth_plan))
    gets = [ast.unparse(node) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get" and len(node.args) > 1]
    assert gets == []
