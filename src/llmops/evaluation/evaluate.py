"""Evaluation: eval loss and golden-set accuracy for the base model and the candidate.

Eval loss: the base model is loaded once with the candidate's LoRA adapter attached; the
base figures come from the same weights with the adapter disabled, so both are measured on
exactly the same inputs, tokenizer and generation settings. Golden answers and the suites:
each role as its target serves it (`served`: adapter, merged or int8 weights).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.config import ModelSpec, ServeSettings
from llmops.data.reader import read_conversations
from llmops.process.activity import activity

if TYPE_CHECKING:
    from llmops.evaluation.served import Artefact


@dataclass
class EvalReport:
    """Metrics per model ('base', 'candidate') and the golden answers behind them."""

    metrics: dict[str, dict[str, float]]
    answers: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    suites: list[dict[str, Any]] = field(default_factory=list)  # SuiteResults, as dicts
    # role → what it was served as (adapter, merged, int8; `served`); the gate's subject is
    # the candidate as its target serves it
    artefacts: dict[str, str] = field(default_factory=dict)


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
             settings: ServeSettings, artefacts: Mapping[str, Artefact] | None = None,
             keep_candidate: bool = False) -> EvalReport:
    """Base, candidate and (if given) production on exactly the same inputs: eval loss
    with transformers (of the adapters), golden answers and the suites through vLLM
    servers (`settings`), each role served as `artefacts` says (role → adapter, merged,
    int8; default: the adapter as a LoRA module). A candidate served as weights has its
    adapter measured beside it as `candidate_adapter` (`served`); with `keep_candidate`,
    its server is kept for the deploy that follows (`evalserve.evaluate_with_vllm`)."""
    from dataclasses import asdict

    from llmops.evaluation.answercache import AnswerCache
    from llmops.evaluation.evalserve import evaluate_with_vllm
    from llmops.evaluation.served import (
        ADAPTER_ROLE,
        ROLES,
        plan_servers,
        served_roles,
        served_weights,
    )
    from llmops.evaluation.suites import suites_for
    from llmops.models.derived import served_cache_root

    started = time.perf_counter()
    artefacts = dict(artefacts or {})
    losses = eval_losses(spec, base_model, adapters)
    weights = served_weights(base_model, adapters, artefacts, served_cache_root(spec.name))
    servers = plan_servers(base_model, adapters, weights)
    golden = spec.golden_sets()
    # What each role's artefact answered before (on this engine and these settings) is not
    # asked again; a server none of whose roles misses an answer is not started.
    cache = AnswerCache(answer_cache_dir(),
                        served_roles(base_model, adapters, artefacts, settings))
    generated, answers, suites = evaluate_with_vllm(
        spec.name, servers, golden, spec.validation.eval.max_new_tokens, settings,
        suites_for(spec), cache, spec.validation.eval.adapter_suites, keep_candidate)
    roles = [r for r in ROLES if any(r in s.roles for s in servers)]
    # Eval loss is the adapter's (transformers + PEFT), for the role and its adapter alike.
    metrics = {role: {**losses.get("candidate" if role == ADAPTER_ROLE else role, {}),
                      **generated.get(role, {})} for role in roles}
    served: dict[str, str] = {role: artefacts.get(role, "adapter") for role in adapters}
    if ADAPTER_ROLE in metrics:
        served[ADAPTER_ROLE] = "adapter"
    return EvalReport(metrics, answers, time.perf_counter() - started,
                      [asdict(s) for s in suites], served)


def answer_cache_dir() -> Path:
    """The answer cache (`llmops.evaluation.answercache`): `.llmops/cache/answers/`."""
    from llmops.config.paths import state_subdir

    return state_subdir("cache") / "answers"


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
