"""Serving throughput of the local endpoint against transformers `generate`, same prompts.

The endpoint is started exactly as `llmops deploy` starts it (deploy/local.yml, the adapter
merged into the weights or served as a LoRA module), then N concurrent streaming requests
× T generated tokens each (ignore_eos, greedy) go through the OpenAI-compatible API; start-up
is reported apart. The baselines generate the same T tokens for the same prompts with
transformers in this process: one prompt at a time, then all prompts in one padded batch.

    .venv/bin/python benchmarks/serving.py                       # support-bot, latest run
    .venv/bin/python benchmarks/serving.py --requests 64 --tokens 64 --skip-sequential
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any


def latest_adapter(model: str) -> Path:
    from llmops.paths import state_subdir

    runs = sorted((p for p in (state_subdir("runs") / model).glob("*")
                   if (p / "adapter_config.json").is_file()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"no trained run of {model}: run `llmops release {model}` first")
    return runs[-1]


def prompts_for(model: str, n: int) -> list[str]:
    from llmops.config import load_model
    from llmops.evaluate import read_golden

    golden = [g.question for g in read_golden(load_model(model).golden_paths()[0])]
    return [golden[i % len(golden)] for i in range(n)]


def vllm_endpoint(model: str, base: str, adapter: Path, prompts: list[str], tokens: int,
                  extra: list[str]) -> dict[str, Any]:
    from llmops import serve
    from llmops.config import load_deploy
    from llmops.loadtest import load_test

    settings = load_deploy("local").serve_for(model)
    settings = settings.model_copy(update={"extra_args": [*settings.extra_args, *extra]})
    t0 = time.perf_counter()
    dep = serve.start(model, "bench", "bench", base, adapter, settings)
    start_s = time.perf_counter() - t0
    try:
        load_test(dep.url, model, prompts[:4], 4, 0.1, 8)  # warm-up, not measured
        result = load_test(dep.url, model, prompts, len(prompts), 0.0, tokens,
                           min_requests=len(prompts))
    finally:
        dep.kill()
    out = result.summary()
    out["start_s"] = round(start_s, 1)
    out["mode"] = settings.serve
    return out


def transformers_runs(base: str, adapter: Path, prompts: list[str], tokens: int,
                      sequential: int) -> dict[str, float]:
    """Tokens/s of `generate`: `sequential` prompts one at a time, then all in one batch."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    tok = AutoTokenizer.from_pretrained(base, padding_side="left")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
                                      str(adapter)).merge_and_unload().eval()
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                     add_generation_prompt=True) for p in prompts]
    gen = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False,
           "pad_token_id": tok.pad_token_id or tok.eos_token_id}
    out: dict[str, float] = {}
    if sequential:
        started = time.perf_counter()
        for text in texts[:sequential]:
            with torch.no_grad():
                model.generate(**tok(text, return_tensors="pt"), **gen)
        out["sequential_tok_s"] = sequential * tokens / (time.perf_counter() - started)
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(**tok(texts, return_tensors="pt", padding=True), **gen)
    out["batched_tok_s"] = len(texts) * tokens / (time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="support-bot")
    parser.add_argument("--requests", type=int, default=64, help="concurrent requests")
    parser.add_argument("--tokens", type=int, default=64, help="generated per request")
    parser.add_argument("--sequential", type=int, default=8,
                        help="prompts the sequential baseline generates (its rate is per token)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--vllm-arg", action="append", default=[],
                        help="extra vLLM argument (repeatable), e.g. --vllm-arg=--max-num-seqs=128")
    args = parser.parse_args()

    from llmops.basemodels import ensure_base_model
    from llmops.config import load_model

    spec = load_model(args.model)
    base = str(ensure_base_model(spec.base_model))
    adapter = latest_adapter(args.model)
    prompts = prompts_for(args.model, args.requests)
    print(f"{args.model}: adapter {adapter.name}, {args.requests} requests × {args.tokens} "
          f"tokens, {os.cpu_count()} cores", flush=True)
    served = vllm_endpoint(args.model, base, adapter, prompts, args.tokens, args.vllm_arg)
    print(f"vLLM ({served['mode']}): {served['tokens_per_s']} tok/s, TTFT p50 "
          f"{served['ttft_p50_s']} s p99 {served['ttft_p99_s']} s, latency p50 "
          f"{served['p50_s']} s p99 {served['p99_s']} s, {served['errors']} errors "
          f"(server start {served['start_s']} s)", flush=True)
    if args.skip_baseline:
        return
    base_rates = transformers_runs(base, adapter, prompts, args.tokens, args.sequential)
    for name, rate in base_rates.items():
        print(f"transformers {name.removesuffix('_tok_s')}: {rate:.1f} tok/s → vLLM is "
              f"{served['tokens_per_s'] / rate:.1f}×", flush=True)


if __name__ == "__main__":
    main()
