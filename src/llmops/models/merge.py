"""Merge a LoRA adapter into its base model: plain safetensors that any engine serves.

vLLM-CPU computes LoRA layers far slower than plain weights, so serving merged weights is
the faster choice on CPU.
Shards stay below GitLab's per-file limit.
"""

from __future__ import annotations

from pathlib import Path

MAX_SHARD = "4GB"


def merged_model(base_model: str, adapter_dir: Path, out: Path | None = None,
                 max_shard: str = MAX_SHARD, reuse: Path | None = None) -> Path:
    """`adapter_dir/merged` (built once, checked before reuse: `llmops.models.derived`): base +
    adapter merged, saved in bf16 with the base tokenizer; linked from `reuse` (the same
    merge, built by evaluation) when that matches."""
    from llmops.models.derived import built_once

    def build(folder: Path) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from llmops.process.activity import activity

        with activity("merging the adapter into its base model"):
            base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
            model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
            model.to(torch.bfloat16)  # type: ignore[call-arg]
            model.save_pretrained(folder, max_shard_size=max_shard)
            AutoTokenizer.from_pretrained(base_model).save_pretrained(folder)

    return built_once(out or adapter_dir / "merged", build, source=adapter_dir, reuse=reuse)
