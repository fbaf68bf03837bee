"""Int8 weights for CPU serving: a merged bf16 model rewritten in compressed-tensors' W8A8
format, which vLLM loads without any quantization library.

Every 2-D weight of the decoder layers (the attention and MLP projections) becomes int8 with
one scale per output channel (symmetric, absmax / 127); vLLM quantizes the activations per
token at run time and multiplies in int8 (with AMX where the CPU has it). Embeddings, norms
and the LM head stay bf16. Quality is checked by the deployment's smoke test and the serving
benchmark's golden answers, not assumed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from llmops.models.derived import DERIVED

if TYPE_CHECKING:
    import torch

INT8_DIR = "merged-w8a8"
_DECODER_WEIGHT = re.compile(r"\.layers\.\d+\..+\.weight$")
QUANTIZATION_CONFIG = {
    "quant_method": "compressed-tensors",
    "format": "int-quantized",
    "quantization_status": "compressed",
    "config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel",
                    "dynamic": False},
        "input_activations": {"num_bits": 8, "type": "int", "symmetric": True,
                              "strategy": "token", "dynamic": True}}},
    "ignore": ["lm_head"],
}


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (int8 weight, float32 scale of shape [out, 1])."""
    import torch

    w = weight.float()
    scale = (w.abs().amax(dim=1, keepdim=True) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


def int8_model(merged: Path, out: Path | None = None, reuse: Path | None = None) -> Path:
    """`merged`'s sibling `merged-w8a8` (built once, checked before reuse:
    `llmops.models.derived`): its decoder weights in int8; linked from `reuse` (the same
    rewrite, built by evaluation) when that matches."""
    from safetensors.torch import load_file, save_file

    from llmops.models.derived import built_once
    from llmops.process.activity import activity

    def build(folder: Path) -> None:
        with activity("quantizing the merged weights to int8 (w8a8)"):
            _build(folder)

    def _build(folder: Path) -> None:
        weight_map: dict[str, str] = {}
        for shard in sorted(merged.glob("*.safetensors")):
            tensors = {}
            for name, tensor in load_file(shard).items():
                if tensor.ndim == 2 and _DECODER_WEIGHT.search(name):
                    tensors[name], tensors[name.removesuffix("weight") + "weight_scale"] = \
                        quantize_weight(tensor)
                else:
                    tensors[name] = tensor
            save_file(tensors, folder / shard.name, metadata={"format": "pt"})
            weight_map |= dict.fromkeys(tensors, shard.name)
        for extra in merged.iterdir():  # tokenizer, chat template, generation config
            if extra.is_file() and extra.suffix != ".safetensors" and extra.name not in (
                    "config.json", "model.safetensors.index.json", DERIVED):
                shutil.copy2(extra, folder / extra.name)
        if (merged / "model.safetensors.index.json").is_file():
            (folder / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
        config = json.loads((merged / "config.json").read_text())
        config["quantization_config"] = QUANTIZATION_CONFIG
        (folder / "config.json").write_text(json.dumps(config, indent=2))

    return built_once(out or merged.parent / INT8_DIR, build, source=merged, reuse=reuse)
