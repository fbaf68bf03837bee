"""The merged model: the adapter's effect baked into plain safetensors, in bounded shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from conftest import tiny_base_and_adapter  # noqa: E402 (after the skip)


def test_merged_model_matches_the_adapter_and_keeps_shards_under_the_limit(
        tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llmops.models.merge import merged_model

    base_dir, adapter_dir = tiny_base_and_adapter(tmp_path)
    merged = merged_model(str(base_dir), adapter_dir, max_shard="200KB")

    shards = sorted(merged.glob("*.safetensors"))
    assert len(shards) > 1, "a limit below the model's size must split it"
    assert all(p.stat().st_size <= 200_000 for p in shards), [p.stat().st_size for p in shards]
    index = json.loads((merged / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    assert (merged / "tokenizer.json").is_file()
    assert not list(merged.rglob("adapter_*")), "merged weights need no adapter"

    ids = torch.tensor([[1, 5, 9, 20, 33]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        want = PeftModel.from_pretrained(base, str(adapter_dir)).eval()(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        before = plain.eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32)
        got_logits = got.eval()(ids).logits
    # bf16 weights: agreement to bf16's precision, and clearly not the base model's output.
    assert torch.allclose(got_logits, want, atol=0.05, rtol=0.05)
    assert (want - before).abs().max() > 10 * (got_logits - want).abs().max()


def test_merged_model_is_built_once(tmp_path: Path) -> None:
    from llmops.models.merge import merged_model

    base_dir, adapter_dir = tiny_base_and_adapter(tmp_path)
    first = merged_model(str(base_dir), adapter_dir)
    stamp = (first / "config.json").stat().st_mtime_ns
    assert merged_model(str(base_dir), adapter_dir) == first
    assert (first / "config.json").stat().st_mtime_ns == stamp
    assert not list(adapter_dir.glob(".merged-*")), "no temporary folder left behind"
