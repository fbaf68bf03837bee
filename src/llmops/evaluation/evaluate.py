"""Evaluation: eval loss and golden-set accuracy for the base model and the candidate.

The base model is loaded once with the candidate's LoRA adapter attached; the base figures
come from the same weights with the adapter disabled, so both are measured on exactly the
same inputs, tokenizer and generation settings.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.config import ModelSpec, ServeSettings
from llmops.data.reader import read_conversations
from llmops.process.activity import activity


@dataclass
class EvalReport:
    """Metrics per model ('base', 'candidate') and the golden answers behind them."""

    metrics: dict[str, dict[str, float]]
    answers: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    suites: list[dict[str, Any]] = field(default_factory=list)  # SuiteResults, as dicts


def eval_conversations(spec: ModelSpec) -> list[list[dict[str, str]]]:
    """The eval sets' conversations, read as Axolotl reads them (ShareGPT, alpaca, ...).

    No completion set gets here: `load_model` refuses one as an eval set, since the loss
    below is that of the assistant turn through the chat template."""
    return [c for ref in spec.datasets if ref.split == "eval" for c in read_conversations(ref)]


def eval_loss(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]]) -> float:
    """Mean token loss on the last assistant turn of each conversation."""
    import torch

    total, count = 0.0, 0
    for messages in conversations:
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
        full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
        ids = torch.tensor([full])
        labels = ids.clone()
        labels[0, : len(prompt)] = -100
        with torch.no_grad():
            out = model(input_ids=ids, labels=labels)
        n = int((labels[0, 1:] != -100).sum())
        total += float(out.loss) * n
        count += n
    return total / count if count else math.nan


def eval_losses(spec: ModelSpec, base_model: str, adapters: dict[str, Path]) -> \
        dict[str, dict[str, float]]:
    """Eval loss and perplexity of the base and each adapter, with transformers + PEFT
    (the adapters share one loaded base model)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    evals = eval_conversations(spec)
    if not evals:
        return {}
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    names = list(adapters)
    model = PeftModel.from_pretrained(base, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    model.eval()
    out: dict[str, dict[str, float]] = {}
    for role in ("base", *names):
        with activity(f"eval loss of {role} over {len(evals)} conversations"), \
                _adapter(model, None if role == "base" else role):
            loss = eval_loss(model, tokenizer, evals)
        out[role] = {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0))}
    return out


def evaluate(spec: ModelSpec, base_model: str, adapters: dict[str, Path],
             settings: ServeSettings) -> EvalReport:
    """Base, candidate and (if given) production on exactly the same inputs: eval loss
    with transformers, golden answers through a vLLM server (`settings`) loading the
    adapters as LoRA modules, as deployed."""
    from dataclasses import asdict

    from llmops.evaluation.evalserve import evaluate_with_vllm
    from llmops.evaluation.suites import suites_for

    started = time.perf_counter()
    losses = eval_losses(spec, base_model, adapters)
    golden = spec.golden_sets()
    generated, answers, suites = evaluate_with_vllm(
        spec.name, base_model, adapters, golden, spec.validation.eval.max_new_tokens,
        settings, suites_for(spec))
    metrics = {role: {**losses.get(role, {}), **generated.get(role, {})}
               for role in ("base", *adapters)}
    return EvalReport(metrics, answers, time.perf_counter() - started,
                      [asdict(s) for s in suites])


class _adapter:
    """Context manager: run the PEFT model with one named adapter, or none (the base)."""

    def __init__(self, model: Any, name: str | None) -> None:
        self.model, self.name = model, name
        self._ctx: Any = None

    def __enter__(self) -> None:
        if self.name is None:
            self._ctx = self.model.disable_adapter()
            self._ctx.__enter__()
        else:
            self.model.set_adapter(self.name)

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
