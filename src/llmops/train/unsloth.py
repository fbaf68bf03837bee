"""The Unsloth backend: the same Axolotl YAML, trained with FastLanguageModel + TRL.

`unsloth_plan` translates the resolved Axolotl config into the three argument sets Unsloth
needs (FastLanguageModel.from_pretrained, FastLanguageModel.get_peft_model, trl.SFTConfig)
plus the data files; it is pure and tested here. Keys Unsloth cannot honour (multi-GPU
DeepSpeed/FSDP, RL, other dataset types) are refused by name instead of being ignored.
`run_unsloth` executes the plan; it needs one NVIDIA GPU (its test is marked `gpu`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from llmops.config import DatasetRef
from llmops.config.axolotl import AxolotlDataset, AxolotlTraining
from llmops.config.datasets import SUPPORTED
from llmops.data.reader import read_conversations
from llmops.errors import StageFailed, UsageError

# Axolotl's `lora_target_linear: true` means every linear projection of the blocks.
LINEAR_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
OPTIMIZERS = {"adamw_torch": "adamw_torch", "adamw_torch_fused": "adamw_torch_fused",
              "adamw_bnb_8bit": "adamw_8bit", "adamw_8bit": "adamw_8bit",
              "paged_adamw_8bit": "paged_adamw_8bit", "sgd": "sgd", "adafactor": "adafactor"}
SCHEDULERS = {"cosine", "linear", "constant", "constant_with_warmup", "polynomial"}
UNSUPPORTED = ("deepspeed", "fsdp", "fsdp_config", "rl", "reward_model", "process_reward_model")


def unsloth_plan(cfg: dict[str, Any]) -> dict[str, Any]:
    """{"model": …, "peft": …, "sft": …, "data": …} for a resolved Axolotl config, read
    through its typed training keys (`AxolotlTraining`: one default per key)."""
    refused = [k for k in UNSUPPORTED if cfg.get(k)]
    keys = training_keys(cfg)
    types = {d.type for d in keys.datasets}
    if types - set(SUPPORTED):
        refused.append(f"datasets.type {sorted(types - set(SUPPORTED))}")
    if keys.optimizer not in OPTIMIZERS:
        refused.append(f"optimizer {keys.optimizer}")
    if keys.lr_scheduler not in SCHEDULERS:
        refused.append(f"lr_scheduler {keys.lr_scheduler}")
    if refused:
        raise UsageError("the unsloth backend cannot honour " + ", ".join(refused)
                         + ": use --backend axolotl")
    targets = keys.lora_target_modules or (
        LINEAR_TARGETS if keys.lora_target_linear else ["q_proj", "v_proj"])
    return {
        "model": {"model_name": keys.base_model, "max_seq_length": keys.sequence_len,
                  "load_in_4bit": keys.load_in_4bit or keys.adapter == "qlora",
                  "dtype": None},
        "peft": {"r": keys.lora_r, "lora_alpha": keys.lora_alpha,
                 "lora_dropout": keys.lora_dropout,
                 "target_modules": targets if isinstance(targets, str) else list(targets),
                 "bias": "none",
                 "use_gradient_checkpointing": "unsloth" if keys.gradient_checkpointing
                 else False, "random_state": keys.seed},
        "sft": {"output_dir": keys.output_dir,
                "per_device_train_batch_size": keys.micro_batch_size,
                "gradient_accumulation_steps": keys.gradient_accumulation_steps,
                "learning_rate": keys.learning_rate,
                "lr_scheduler_type": keys.lr_scheduler,
                "warmup_steps": keys.warmup_steps,
                "max_steps": keys.max_steps or -1,  # transformers' -1: num_train_epochs decides
                "num_train_epochs": keys.num_epochs,
                "weight_decay": keys.weight_decay,
                "optim": OPTIMIZERS[keys.optimizer],
                "max_length": keys.sequence_len, "packing": keys.sample_packing,
                "dataset_text_field": "text",
                "logging_steps": keys.logging_steps,
                "save_steps": keys.save_steps,
                "eval_strategy": "steps" if keys.test_datasets else "no",
                "eval_steps": keys.eval_steps or keys.save_steps,
                "seed": keys.seed, "bf16": keys.bf16 in (True, "auto", "true"),
                "fp16": False, "report_to": ["mlflow"], "run_name": keys.mlflow_run_name},
        "data": {"train": [_data_entry(d) for d in keys.datasets],
                 "eval": [_data_entry(d) for d in keys.test_datasets]},
    }


def training_keys(cfg: dict[str, Any]) -> AxolotlTraining:
    """The resolved config's training keys, typed; a missing or mistyped one is a usage
    error that names it."""
    try:
        return AxolotlTraining.model_validate(cfg)
    except ValidationError as exc:
        raise UsageError("the unsloth backend cannot read " + "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        ) from exc


def _data_entry(d: AxolotlDataset) -> dict[str, Any]:
    return {**d.entry(), "path": d.path, "type": d.type}


def _texts(entries: list[dict[str, Any]], tokenizer: Any,
           split: Literal["train", "eval"]) -> Any:
    """The datasets as one `text` column: each conversation rendered through the model's
    chat template (read by llmops' one reader), a completion row as its text."""
    from datasets import Dataset  # type: ignore[attr-defined]

    texts = [
        msgs[0]["content"] if e["type"] == "completion"
        else tokenizer.apply_chat_template(msgs, tokenize=False)
        for e in entries
        for msgs in read_conversations(DatasetRef(Path(e["path"]), e["type"], split, e))
    ]
    return Dataset.from_dict({"text": texts}) if entries else None


@contextlib.contextmanager
def mlflow_callback_logs_into(run_id: str) -> Iterator[None]:
    """While training, MLFLOW_RUN_ID names the pipeline's run: transformers' MLflow callback
    takes the run to log into from this process's environment only (Unsloth trains in the
    CLI's own process, not a child). The one write to the environment of this module; the
    earlier value comes back afterwards, so no later MLflow call resumes the run by it."""
    previous = os.environ.get("MLFLOW_RUN_ID")
    os.environ["MLFLOW_RUN_ID"] = run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_RUN_ID", None)
        else:
            os.environ["MLFLOW_RUN_ID"] = previous


def run_unsloth(cfg: dict[str, Any], run_id: str, resume: bool = False) -> Path:
    """Train on one NVIDIA GPU into cfg["output_dir"] (PEFT adapter files), logging into
    the MLflow run `run_id` through transformers' MLflow callback."""
    plan = unsloth_plan(cfg)
    from unsloth import FastLanguageModel  # noqa: I001  (first: it patches transformers)
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = FastLanguageModel.from_pretrained(**plan["model"])
    model = FastLanguageModel.get_peft_model(model, **plan["peft"])
    trainer = SFTTrainer(model=model, processing_class=tokenizer,
                         train_dataset=_texts(plan["data"]["train"], tokenizer, "train"),
                         eval_dataset=_texts(plan["data"]["eval"], tokenizer, "eval"),
                         args=SFTConfig(**plan["sft"]))
    with mlflow_callback_logs_into(run_id):
        trainer.train(resume_from_checkpoint=True if resume else None)
    out = Path(plan["sft"]["output_dir"])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not (out / "adapter_config.json").is_file():
        raise StageFailed(f"unsloth finished but wrote no adapter in {out}")
    return out
