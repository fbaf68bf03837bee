"""The release's deploy step: serving the server the gate evaluated (`serve.handoff`)
against starting the same weights again (the baseline: what every release did before), in
alternating rounds, same model, weights and settings.

Each round evaluates a candidate (a random LoRA adapter on the model's base, merged as the
compute plan serves it; its golden set asked, not timed), then times the deploy step from
the prepared deployment to its first answer: taken over, or started afresh while nothing
else runs. The evaluation's own server is stopped before the fresh start, as it was.

    .venv/bin/python benchmarks/handoff.py                  # support-bot's base model
    .venv/bin/python benchmarks/handoff.py --model tiny --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def random_adapter(base: str, out: Path, rank: int = 16) -> Path:
    """A LoRA adapter of `base` on every linear layer whose B matrices are not zero."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank,
                                            target_modules="all-linear",
                                            init_lora_weights=False))
    peft.save_pretrained(out)
    return out


def model_as_evaluated(model: str) -> tuple[Any, str, Any]:
    """The model's spec, its base model's folder and the settings evaluation serves it
    with (this machine's compute plan, printed first)."""
    from llmops.compute import machine_plan
    from llmops.config import load_model
    from llmops.models.base import ensure_base_model
    from llmops.stages.evaluation import evaluation_settings

    plan = machine_plan()
    print(f"CPU {plan.cpu_model}: ISA {plan.isa}; {plan.line()}", flush=True)
    spec = load_model(model)
    return spec, str(ensure_base_model(spec.base_model)), evaluation_settings(spec)


def first_answer(url: str, name: str, key: str) -> None:
    import httpx

    got = httpx.post(f"{url}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                     json={"model": name, "max_tokens": 4,
                           "messages": [{"role": "user", "content": "hi"}]}, timeout=300)
    got.raise_for_status()


def one_round(variant: str, spec: Any, base: str, adapter: Path, settings: Any) -> float:
    """Seconds from the prepared deployment to its first answer."""
    from llmops.evaluation import evalserve
    from llmops.evaluation.served import plan_servers, served_weights
    from llmops.models.derived import served_cache_root
    from llmops.serve import handoff
    from llmops.serve import process as serve

    weights = served_weights(base, {"candidate": adapter}, {"candidate": "merged"},
                             served_cache_root(spec.name))
    [candidate] = plan_servers(base, {"candidate": adapter}, weights)[1:]
    keep = variant == "handoff"
    evalserve.evaluate_with_vllm(spec.name, [candidate], spec.golden_sets(),
                                 spec.validation.eval.max_new_tokens, settings,
                                 keep_candidate=keep)
    prepared = serve.prepare(spec.name, "bench", "bench", base, adapter, settings)
    key = serve.local_api_key()
    started = time.perf_counter()
    dep = handoff.take_over(prepared, settings, key) if keep else None
    if keep and dep is None:
        raise SystemExit("the evaluated server was not taken over")
    dep = dep or serve.start_prepared(prepared, settings)
    try:
        first_answer(dep.check_url, dep.served_name, key)
        return time.perf_counter() - started
    finally:
        dep.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="support-bot")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import os

    spec, base, settings = model_as_evaluated(args.model)
    times: dict[str, list[float]] = {"handoff": [], "fresh start": []}
    with tempfile.TemporaryDirectory() as home:
        os.environ["LLMOPS_HOME"] = home  # its own state; the machine's caches stay shared
        adapter = random_adapter(base, Path(home) / "run")
        for n in range(args.rounds):
            order = ["handoff", "fresh start"] if n % 2 == 0 else ["fresh start", "handoff"]
            for variant in order:
                seconds = one_round(variant, spec, base, adapter, settings)
                times[variant].append(seconds)
                print(f"round {n + 1}, {variant}: first answer {seconds:.2f} s after the "
                      "deploy step began", flush=True)
    took = {v: statistics.mean(t) for v, t in times.items()}
    print(f"handoff {took['handoff']:.2f} s, fresh start {took['fresh start']:.2f} s: the "
          f"deploy step is {took['fresh start'] / max(took['handoff'], 1e-9):.0f}x shorter "
          f"({took['fresh start'] - took['handoff']:.0f} s saved per release)")


if __name__ == "__main__":
    main()
