"""Int8 serving weights: what is quantized, how exactly, and what is left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmops.config import ServeSettings
from llmops.models.quantize import int8_model, quantize_weight


def merged_folder(tmp_path: Path) -> Path:
    merged = tmp_path / "run" / "merged"
    merged.mkdir(parents=True)
    torch.manual_seed(0)
    save_file({
        "model.embed_tokens.weight": torch.randn(100, 32).to(torch.bfloat16),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(64, 32).to(torch.bfloat16),
        "model.layers.0.mlp.down_proj.weight": torch.randn(32, 64).to(torch.bfloat16),
        "model.layers.0.input_layernorm.weight": torch.ones(32).to(torch.bfloat16),
        "model.norm.weight": torch.ones(32).to(torch.bfloat16),
    }, merged / "model.safetensors")
    (merged / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (merged / "tokenizer.json").write_text("{}")
    return merged


def test_per_channel_scales_bound_the_rounding_error() -> None:
    w = torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0], [-254.0, 127.0, 1.0]])
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and scale.shape == (3, 1)
    # Row 0: absmax 1 → scale 1/127; row 2: absmax 254 → scale 2, so 1.0 rounds to 0 or 1.
    assert scale[0, 0] == pytest.approx(1 / 127) and scale[2, 0] == pytest.approx(2.0)
    assert q[0].tolist() == [127, -64, 32] and q[2, :2].tolist() == [-127, 64]
    assert q[1].tolist() == [0, 0, 0]  # an all-zero channel stays zero (no division by 0)
    assert ((q.float() * scale - w).abs() <= scale / 2 + 1e-6).all()


def test_decoder_projections_become_int8_and_the_rest_is_kept(tmp_path: Path) -> None:
    merged = merged_folder(tmp_path)
    out = int8_model(merged)
    assert out == merged.parent / "merged-w8a8"
    before, after = load_file(merged / "model.safetensors"), load_file(out / "model.safetensors")
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight"):
        assert after[name].dtype == torch.int8
        scale = after[name.removesuffix("weight") + "weight_scale"]
        assert scale.shape == (before[name].shape[0], 1)
        assert torch.allclose(after[name].float() * scale, before[name].float(),
                              atol=float(scale.max()) / 2 + 1e-6)
    for name in ("model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                 "model.norm.weight"):
        assert torch.equal(after[name], before[name])
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    assert config["quantization_config"]["ignore"] == ["lm_head"]
    assert (out / "tokenizer.json").is_file()
    assert not list(out.parent.glob(".w8a8-*"))  # no temporary folder left


def test_built_once(tmp_path: Path) -> None:
    merged = merged_folder(tmp_path)
    out = int8_model(merged)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert int8_model(merged) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_int8_serving_needs_the_merged_model() -> None:
    assert ServeSettings(quantization="w8a8-int8").serve == "merged"
    with pytest.raises(ValueError, match="needs serve: merged"):
        ServeSettings(quantization="w8a8-int8", serve="lora")
