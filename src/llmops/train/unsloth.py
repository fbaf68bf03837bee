"""The Unsloth backend: the same Axolotl YAML, trained with FastLanguageModel + TRL.

`unsloth_plan` translates the resolved Axolotl config into the three argument sets Unsloth
needs (FastLanguageModel.from_pretrained, FastLanguageModel.get_peft_model, trl.SFTConfig)
plus the data files; it is pure and tested here. Keys Unsloth cannot honour (multi-GPU
DeepSpeed/FSDP, RL, other dataset types) are refused by name instead of being ignored.
`run_unsloth` executes the plan; it needs one NVIDIA GPU (its test is marked `gpu`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from llmops.config import DatasetRef
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
    """{"model": …, "peft": …, "sft": …, "data": …} for a resolved Axolotl config."""
    refused = [k for k in UNSUPPORTED if cfg.get(k)]
    types = {str(d.get("type")) for d in cfg.get("datasets") or []}
    if types - set(SUPPORTED):
        refused.append(f"datasets.type {sorted(types - set(SUPPORTED))}")
    optimizer = str(cfg.get("optimizer", "adamw_torch"))
    if optimizer not in OPTIMIZERS:
        refused.append(f"optimizer {optimizer}")
    scheduler = str(cfg.get("lr_scheduler", "cosine"))
    if scheduler not in SCHEDULERS:
        refused.append(f"lr_scheduler {scheduler}")
    if refused:
        raise UsageError("the unsloth backend cannot honour " + ", ".join(refused)
                         + ": use --backend axolotl")
    four_bit = bool(cfg.get("load_in_4bit")) or cfg.get("adapter") == "qlora"
    targets = cfg.get("lora_target_modules") or (
        LINEAR_TARGETS if cfg.get("lora_target_linear") else ["q_proj", "v_proj"])
    seq = int(cfg.get("sequence_len", 2048))
    bf16 = cfg.get("bf16") in (True, "auto", "true")
    eval_sets = cfg.get("test_datasets") or []
    return {
        "model": {"model_name": str(cfg["base_model"]), "max_seq_length": seq,
                  "load_in_4bit": four_bit, "dtype": None},
        "peft": {"r": int(cfg["lora_r"]), "lora_alpha": int(cfg["lora_alpha"]),
                 "lora_dropout": float(cfg.get("lora_dropout", 0.0)),
                 "target_modules": list(targets), "bias": "none",
                 "use_gradient_checkpointing": "unsloth" if cfg.get("gradient_checkpointing")
                 else False, "random_state": int(cfg.get("seed", 3407))},
        "sft": {"output_dir": str(cfg["output_dir"]),
                "per_device_train_batch_size": int(cfg.get("micro_batch_size", 1)),
                "gradient_accumulation_steps": int(cfg.get("gradient_accumulation_steps", 1)),
                "learning_rate": float(cfg["learning_rate"]),
                "lr_scheduler_type": scheduler,
                "warmup_steps": int(cfg.get("warmup_steps", 0)),
                "max_steps": int(cfg.get("max_steps") or -1),
                "num_train_epochs": float(cfg.get("num_epochs", 1)),
                "weight_decay": float(cfg.get("weight_decay", 0.0)),
                "optim": OPTIMIZERS[optimizer],
                "max_length": seq, "packing": bool(cfg.get("sample_packing")),
                "dataset_text_field": "text",
                "logging_steps": int(cfg.get("logging_steps", 1)),
                "save_steps": int(cfg.get("save_steps") or 500),
                "eval_strategy": "steps" if eval_sets else "no",
                "eval_steps": int(cfg.get("eval_steps") or cfg.get("save_steps") or 500),
                "seed": int(cfg.get("seed", 42)), "bf16": bf16, "fp16": False,
                "report_to": ["mlflow"], "run_name": cfg.get("mlflow_run_name")},
        "data": {"train": [_data_entry(d) for d in cfg.get("datasets") or []],
                 "eval": [_data_entry(d) for d in eval_sets]},
    }


def _data_entry(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "path": str(d["path"]), "type": str(d.get("type"))}


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


def run_unsloth(cfg: dict[str, Any], run_id: str, resume: bool = False) -> Path:
    """Train on one NVIDIA GPU into cfg["output_dir"] (PEFT adapter files), logging into
    the MLflow run `run_id` through transformers' MLflow callback."""
    plan = unsloth_plan(cfg)
    os.environ["MLFLOW_RUN_ID"] = run_id
    from unsloth import FastLanguageModel  # noqa: I001  (first: it patches transformers)
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = FastLanguageModel.from_pretrained(**plan["model"])
    model = FastLanguageModel.get_peft_model(model, **plan["peft"])
    trainer = SFTTrainer(model=model, processing_class=tokenizer,
                         train_dataset=_texts(plan["data"]["train"], tokenizer, "train"),
                         eval_dataset=_texts(plan["data"]["eval"], tokenizer, "eval"),
                         args=SFTConfig(**plan["sft"]))
    trainer.train(resume_from_checkpoint=True if resume else None)
    out = Path(plan["sft"]["output_dir"])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not (out / "adapter_config.json").is_file():
        raise StageFailed(f"unsloth finished but wrote no adapter in {out}")
    return out
