"""Training speed on this CPU: the pipeline's Axolotl run against a plain Trainer script.

Both fine-tune the same LoRA (rank, alpha, targets, learning rate, schedule, seed) on the
same examples for the same number of epochs, so both see the same tokens:

- **baseline**: transformers + peft `Trainer` with default settings: fp32, examples padded
  to the longest in each batch (`DataCollatorForSeq2Seq`), no packing, default threads;
- **pipeline**: `python -m axolotl.cli.train` on the model's YAML as the pipeline resolves
  and launches it on this machine (sample packing, bf16 autocast when the CPU multiplies
  bf16 in hardware, the decoder blocks compiled, TCMalloc), with MLflow left out of both.
  Its `train_runtime` includes the compilation (the first step).

Reported: training tokens/s (real, non-padding tokens of the examples, over the trainer's
own `train_runtime`), the ratio, both adapters' eval loss measured by one function on the
eval set, and model FLOPs utilisation against the peak of a bf16 (and fp32) matmul timed in
this script. A LoRA step costs about 4·N FLOPs per token (forward, and the backward pass
to the activations; the frozen weights get no gradient) plus 6·N_lora and the attention;
the LM head's share of N is counted on the labelled tokens only, as the pipeline computes
it (`llmops.train.labelled_logits`), so that skipping the prompts' logits does not count as speed.

    .venv/bin/python benchmarks/training.py [--model support-bot] [--epochs N] [--seeds 1,2,3]

By default both sides train the YAML's `num_epochs`, as the release does (support-bot: 4,
about 17 minutes for the two here); `--epochs 1` is the quick look, where the pipeline's
one-off compilation weighs four times as much.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from peak import matmul_peak


@dataclass
class Result:
    side: str  # "baseline" or "pipeline"
    name: str
    seconds: float
    tokens: int
    eval_loss: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


# The keys that say where a row's fields are: the rows the pipeline side trains on are
# rewritten as plain `messages`, so both sides read the same conversations.
FIELD_KEYS = ("field_messages", "message_property_mappings", "message_field_role",
              "message_field_content", "roles", "field")


def read_rows(entry: dict[str, Any], limit: int | None = None) -> list[list[dict[str, str]]]:
    """Conversations of a dataset entry of the resolved YAML (ShareGPT, alpaca, ...), read
    by the pipeline's own reader."""
    from llmops.config import DatasetRef
    from llmops.data.reader import read_conversations

    if entry.get("type") == "completion":
        raise SystemExit("benchmarks/training.py measures chat fine-tuning: "
                         "completion datasets are not supported")
    rows = read_conversations(DatasetRef(Path(entry["path"]), str(entry.get("type")),
                                         "train", entry))
    return rows[:limit] if limit else rows


def tokenize(tok: Any, messages: list[dict[str, str]], max_len: int) -> dict[str, list[int]]:
    """Chat template; loss on the final assistant turn up to its end-of-turn token, as
    Axolotl's `roles_to_train: [assistant]` labels it (not the template's newline after)."""
    prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True,
                                     return_dict=True)["input_ids"]
    full = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    full = full[:max_len]
    labels = [-100] * min(len(prompt), len(full)) + full[len(prompt):]
    if tok.eos_token_id in labels:
        end = len(labels) - labels[::-1].index(tok.eos_token_id)
        labels = labels[:end] + [-100] * (len(labels) - end)
    return {"input_ids": full, "attention_mask": [1] * len(full), "labels": labels}


def eval_loss(base: str, adapter: Path, tok: Any, rows: list[Any], max_len: int) -> float:
    """Mean loss per labelled token of an adapter on the eval rows: one function for both."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter)).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for messages in rows:
            ex = tokenize(tok, messages, max_len)
            ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / count


def baseline(cfg: dict[str, Any], rows: list[Any], epochs: int, batch: int, out: Path) -> float:
    """A plain transformers + peft Trainer, default settings; returns train_runtime."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from datasets import Dataset

    tok = AutoTokenizer.from_pretrained(cfg["base_model"])
    data = Dataset.from_list([tokenize(tok, m, cfg["sequence_len"]) for m in rows])
    model = AutoModelForCausalLM.from_pretrained(cfg["base_model"], dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg["lora_dropout"],
        target_modules="all-linear", task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=batch,
        num_train_epochs=epochs, learning_rate=cfg["learning_rate"],
        lr_scheduler_type=cfg["lr_scheduler"], warmup_steps=cfg["warmup_steps"],
        optim=cfg["optimizer"], logging_steps=10, save_strategy="no", report_to=[],
        seed=cfg["seed"], use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True))
    runtime = float(trainer.train().metrics["train_runtime"])
    model.save_pretrained(str(out))
    return runtime


def pipeline(model: str, rows_path: Path, epochs: int, out: Path,
             overrides: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Axolotl on the model's YAML as the pipeline resolves it here (plus `overrides`, for
    ablations); returns train_runtime and the config it ran."""
    from llmops.config import load_model
    from llmops.train.run import resolved_axolotl_config, training_env

    cfg = resolved_axolotl_config(load_model(model), out, f"{model}-bench")
    for key in ("mlflow_tracking_uri", "mlflow_experiment_name", "mlflow_run_name",
                "max_steps"):
        cfg.pop(key, None)
    cfg["num_epochs"] = epochs
    plain = {k: v for k, v in cfg["datasets"][0].items() if k not in FIELD_KEYS}
    cfg["datasets"] = [{"roles_to_train": ["assistant"], **plain, "path": str(rows_path),
                        "type": "chat_template"}]
    cfg["save_steps"] = None
    cfg.update(overrides)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "axolotl.bench.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log = out / "train.log"
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-m", "axolotl.cli.train", str(path)], check=True,
                       env=training_env(gpus=0), stdout=fh, stderr=subprocess.STDOUT)
    found = re.findall(r"'train_runtime': '?([0-9.]+)", log.read_text())
    if not found:
        raise SystemExit(f"no train_runtime in {log}")
    return float(found[-1]), cfg


def flops_per_token(base: str, cfg: dict[str, Any], mean_len: float,
                    labelled: float) -> float:
    """Model FLOPs per training token; `labelled`: the share of tokens that carry a label."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(base)
    d, layers, vocab, inter = c.hidden_size, c.num_hidden_layers, c.vocab_size, \
        c.intermediate_size
    kv = d * c.num_key_value_heads // c.num_attention_heads
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * inter  # q, o, k, v, gate/up/down
    n = layers * per_layer + labelled * vocab * d  # matmul weights (the lm_head: labelled)
    r = cfg["lora_r"]
    n_lora = layers * r * ((d + d) * 2 + (d + kv) * 2 + (d + inter) * 3)
    attention = 12 * layers * d * mean_len / 2  # QK and AV, forward + backward, causal
    return 4 * n + 6 * n_lora + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="support-bot")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs for both sides (default: the YAML's num_epochs)")
    parser.add_argument("--examples", type=int, default=None, help="first N training rows")
    parser.add_argument("--baseline-batch", type=int, default=8,
                        help="examples per step of the baseline (the pipeline packs ~9 "
                             "examples of support-bot into its 2 x 256-token rows)")
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")],
                        default=None, help="comma-separated seeds, one baseline and one "
                        "pipeline run each (data order and LoRA init): the eval-loss spread "
                        "they give is the noise the two sides are compared within")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                        help="override a key of the pipeline's resolved YAML (ablations), "
                             "e.g. --set bf16=false")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}

    import torch
    from transformers import AutoTokenizer

    from llmops.compute import machine_plan
    from llmops.config import load_model
    from llmops.train.run import resolved_axolotl_config

    spec = load_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    cfg = resolved_axolotl_config(spec, work, "probe")
    args.seeds = args.seeds or [cfg["seed"]]
    args.epochs = args.epochs or int(cfg.get("num_epochs", 1))
    tok = AutoTokenizer.from_pretrained(cfg["base_model"])
    rows = read_rows(cfg["datasets"][0], args.examples)
    eval_rows = read_rows(cfg["test_datasets"][0])
    rows_path = work / "train.jsonl"
    rows_path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    examples = [tokenize(tok, m, cfg["sequence_len"]) for m in rows]
    lengths = [len(e["input_ids"]) for e in examples]
    labelled = sum(sum(x != -100 for x in e["labels"]) for e in examples) / sum(lengths)
    tokens = sum(lengths) * args.epochs
    print(f"{args.model}: {len(rows)} examples x {args.epochs} epoch(s) = {tokens} tokens "
          f"(mean {sum(lengths) / len(lengths):.1f}, {labelled:.0%} labelled); "
          f"threads {torch.get_num_threads()}; {machine_plan().line()}", flush=True)

    # Timed before and after the runs, the higher kept: a shared machine's noise only lowers
    # a peak, and a lowered peak would inflate the utilisation.
    # Only what this CPU multiplies in hardware is timed: an emulated bf16 matmul takes
    # minutes (and the plan trains in fp32 there).
    bf16_native = machine_plan().bf16_native
    peak = {"bf16": matmul_peak(torch.bfloat16) if bf16_native else 0.0,
            "fp32": matmul_peak(torch.float32)}

    results: list[Result] = []
    for seed in args.seeds:
        seconds = baseline({**cfg, "seed": seed}, rows, args.epochs, args.baseline_batch,
                           work / f"baseline-{seed}")
        results.append(Result("baseline", f"baseline (Trainer, fp32, padded), seed {seed}",
                              seconds, tokens,
                              eval_loss(cfg["base_model"], work / f"baseline-{seed}", tok,
                                        eval_rows, cfg["sequence_len"])))
        print(f"baseline, seed {seed}: {seconds:.1f} s", flush=True)
        seconds, used = pipeline(args.model, rows_path, args.epochs, work / f"pipeline-{seed}",
                                 {**overrides, "seed": seed})
        label = (f"pipeline (Axolotl, packing={used.get('sample_packing')}, "
                 f"bf16={used.get('bf16')}, compile={bool(used.get('torch_compile'))}), "
                 f"seed {seed}")
        results.append(Result("pipeline", label, seconds, tokens,
                              eval_loss(cfg["base_model"], work / f"pipeline-{seed}", tok,
                                        eval_rows, cfg["sequence_len"])))
        print(f"pipeline, seed {seed}: {seconds:.1f} s", flush=True)

    peak = {"bf16": max(peak["bf16"], matmul_peak(torch.bfloat16) if bf16_native else 0.0),
            "fp32": max(peak["fp32"], matmul_peak(torch.float32))}
    print(f"matmul peak: bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s, "
          f"fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s")
    per_token = flops_per_token(cfg["base_model"], cfg, sum(lengths) / len(lengths),
                                labelled)
    print(f"\n{'run':<62} {'seconds':>8} {'tokens/s':>9} {'eval loss':>9} "
          f"{'MFU bf16':>8} {'MFU fp32':>8}")
    for r in results:
        achieved = r.tokens_per_s * per_token
        mfu_bf16 = f"{achieved / peak['bf16']:>8.1%}" if peak["bf16"] else f"{'emulated':>8}"
        print(f"{r.name:<62} {r.seconds:>8.1f} {r.tokens_per_s:>9.1f} {r.eval_loss:>9.4f} "
              f"{mfu_bf16} {achieved / peak['fp32']:>8.1%}")
    sides = {side: [r for r in results if r.side == side] for side in ("baseline", "pipeline")}
    rate = {k: sum(r.tokens for r in v) / sum(r.seconds for r in v) for k, v in sides.items()}
    losses = {k: sorted(r.eval_loss for r in v) for k, v in sides.items()}
    ratio = rate["pipeline"] / rate["baseline"]
    print(f"\nspeed-up {ratio:.2f}x (goal >= 2x); eval loss over seeds {args.seeds}: "
          + "; ".join(f"{k} {v[0]:.4f}-{v[-1]:.4f}" for k, v in losses.items())
          + f"; {per_token / 1e6:.0f} MFLOP per training token")
    out = work / "results.json"
    out.write_text(json.dumps({"peak_flops": peak, "flops_per_token": per_token,
                               "results": [asdict(r) | {"tokens_per_s": r.tokens_per_s}
                                           for r in results], "ratio": ratio}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
