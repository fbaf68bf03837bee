"""The plan applied: a model's serving settings and a training config's precision, with a
warning where a file explicitly asks for what this machine would emulate."""

from __future__ import annotations

import functools
from typing import Any

from llmops.compute.plan import ComputePlan, machine_plan
from llmops.config import DeployConfig, ServeSettings
from llmops.process.activity import warn


def serve_settings(config: DeployConfig, model: str,
                   plan: ComputePlan | None = None) -> ServeSettings:
    """How `model` is served on this machine: deploy/<env>.yml's settings, each `auto`
    decided by the compute plan (this machine's unless given)."""
    plan = plan or machine_plan()
    settings = config.serve_for(model, plan.serving)
    if (cost := plan.emulated_cost(settings.dtype)) is not None:
        _warn_once(f"the deploy YAML serves {model} in {settings.dtype}, but {cost}; "
                   "remove `dtype:` (auto) to let the compute plan choose")
    if settings.quantization == "w8a8-int8" and plan.quantization != "w8a8-int8":
        _warn_once(f"the deploy YAML serves {model} as int8 (w8a8), which this CPU "
                   f"({plan.isa}) does not run faster than {plan.serve_dtype}: int8 matmul "
                   f"measured {plan.speeds.gflops.get('int8', 0):g} GOP/s; remove "
                   "`quantization:` (auto) to let the compute plan choose")
    return settings


def train_precision(cfg: dict[str, Any], plan: ComputePlan) -> tuple[dict[str, Any], list[str]]:
    """The Axolotl config with an explicit precision: the plan's where the YAML says
    `auto` or nothing (Axolotl's own `auto` asks CUDA only, then falls back to fp16, which
    CPUs emulate), the YAML's where it sets one; and the warnings for an emulated choice."""
    cfg = dict(cfg)
    warnings = []
    bf16, fp16 = cfg.get("bf16"), cfg.get("fp16")
    if bf16 in (None, "auto") and fp16 in (None, "auto", False):
        cfg["bf16"] = plan.train_dtype == "bf16"
        cfg["fp16"] = plan.train_dtype == "fp16"
    elif not plan.gpus:
        asked = "bf16" if bf16 is True else "fp16" if fp16 is True else None
        if asked and (cost := plan.emulated_cost(asked)) is not None:
            warnings.append(f"the Axolotl YAML sets `{asked}: true`, but {cost}; "
                            f"remove it (or set `{asked}: auto`) to let the compute plan "
                            f"choose ({plan.train_dtype})")
    cfg.setdefault("fp16", False)
    return cfg, warnings


@functools.cache
def _warn_once(text: str) -> None:
    warn(text)
