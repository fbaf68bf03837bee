"""LoRA adapters with random weights, for checking how an engine serves adapters.

A freshly initialised adapter has lora_B = 0 and changes nothing, so an engine that ignored
it would look correct. These adapters fill both A and B with seeded random values: each one
changes the base model's greedy answers, differently per seed, and the same seed always
writes the same files.
"""

from __future__ import annotations

from pathlib import Path

from llmops.config.axolotl import AxolotlConfig

# Large enough that B·A moves the tiny base's greedy answers on every prompt; small enough
# that they stay text rather than one repeated token.
PROBE_LORA_STD = 0.1


def lora_targets(config: AxolotlConfig) -> str | list[str]:
    """The modules a training config adapts, as peft names them (`lora_target_linear: true`
    is every linear layer but the output head, which is peft's `all-linear`)."""
    if modules := config.get("lora_target_modules"):
        return modules if isinstance(modules, str) else list(modules)
    return "all-linear" if config.get("lora_target_linear") else ["q_proj", "v_proj"]


def random_lora(base_dir: Path, out: Path, seed: int, config: AxolotlConfig) -> Path:
    """Write to `out` a LoRA adapter of the model in `base_dir` with the rank, alpha and
    target modules of `config` (an Axolotl training config) and seeded random A and B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    rank = config.lora_rank or 8
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(
        r=rank, lora_alpha=int(config.get("lora_alpha") or 2 * rank), lora_dropout=0.0,
        target_modules=lora_targets(config), task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in sorted(peft.named_parameters()):
            if ".lora_A." in name or ".lora_B." in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * PROBE_LORA_STD)
    peft.save_pretrained(str(out))
    return out
