"""Serving throughput of the local endpoint against transformers `generate`, same prompts.

The endpoint is started exactly as `llmops deploy` starts it (deploy/local.yml, the adapter
merged into the weights or served as a LoRA module), then N concurrent streaming requests
× T generated tokens each (ignore_eos, greedy) go through the OpenAI-compatible API; start-up
is reported apart. The baselines generate the same T tokens for the same prompts with
transformers in this process: one prompt at a time, then all prompts in one padded batch.

It first prints the CPU's ISA and the machine's compute plan (`llmops doctor`): the endpoint
serves what the plan chose unless --dtype/--quantization say otherwise. Its model FLOP/s
(prompt and generated tokens through the weights) is set against a matmul of the served dtype
timed in this script before and after (the best of both), only where the CPU multiplies that
dtype in hardware. `--compare N` serves fp32 merged, bf16 merged and int8 weights
(`quantization: w8a8-int8`) in turn, N rounds in rotating order, with the golden answers'
accuracy of each, and says whether the plan's choice was the fastest. `--compare-compiled N`
serves the plan's artefact compiled and eager in turn: the start-up compiling costs against
the decode speed it gives back.

    .venv/bin/python benchmarks/serving.py                       # support-bot, latest run
    .venv/bin/python benchmarks/serving.py --skip-baseline --compare 2
    .venv/bin/python benchmarks/serving.py --skip-baseline --compare-compiled 2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any


def latest_adapter(model: str) -> Path:
    from llmops.config.paths import state_subdir

    runs = sorted((p for p in (state_subdir("runs") / model).glob("*")
                   if (p / "adapter_config.json").is_file()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"no trained run of {model}: run `llmops release {model}` first")
    return runs[-1]


def prompts_for(model: str, n: int) -> list[str]:
    from llmops.config import load_model
    from llmops.config.golden import read_golden

    golden = [g.question for g in read_golden(load_model(model).golden_paths()[0])]
    return [golden[i % len(golden)] for i in range(n)]


def vllm_endpoint(model: str, base: str, adapter: Path, prompts: list[str], tokens: int,
                  extra: list[str], quantization: str | None = None,
                  golden: list[Any] | None = None, dtype: str | None = None,
                  enforce_eager: bool | None = None) -> dict[str, Any]:
    """Start the endpoint as `llmops deploy` does (the compute plan's dtype and artefact
    unless `dtype`/`quantization` say otherwise), load-test it, then (with `golden`) answer
    the golden questions through it."""
    from llmops.compute import serve_settings
    from llmops.config import load_deploy, load_model
    from llmops.evaluation import evalserve
    from llmops.serve import process as serve
    from llmops.serve.loadtest import load_test

    settings = serve_settings(load_deploy("local"), model)
    update: dict[str, Any] = {"extra_args": [*settings.extra_args, *extra]}
    if quantization:
        update["quantization"] = quantization
    if dtype:
        update["dtype"] = dtype
    if enforce_eager is not None:
        update["enforce_eager"] = enforce_eager
    settings = settings.model_validate({**settings.model_dump(), **update})
    t0 = time.perf_counter()
    dep = serve.start(model, "bench", "bench", base, adapter, settings)
    start_s = time.perf_counter() - t0
    try:
        key = serve.local_api_key()
        load_test(dep.url, model, prompts[:4], 4, 0.1, 8, api_key=key)  # warm-up
        result = load_test(dep.url, model, prompts, len(prompts), 0.0, tokens,
                           min_requests=len(prompts), api_key=key)
        accuracy = None
        if golden:
            max_new = load_model(model).validation.eval.max_new_tokens
            answers = evalserve.generate(dep.url, [model], golden, max_new,
                                         settings.max_num_seqs, key)
            accuracy = evalserve.generation_metrics(answers, model)["golden_accuracy"]
    finally:
        dep.kill()
    out = result.summary()
    out["start_s"] = round(start_s, 1)
    out["mode"] = f"{settings.serve} {settings.dtype}" + (
        "" if settings.quantization == "none" else f", {settings.quantization}") + (
        ", eager" if settings.enforce_eager else ", compiled")
    out["golden_accuracy"] = accuracy
    return out


def model_flops(base: str, prompts: list[str], tokens: int) -> float:
    """Matmul FLOPs of serving `prompts` and generating `tokens` each: 2 per weight per
    token through the decoder layers, the LM head for generated tokens only, and attention
    over the context so far."""
    from transformers import AutoConfig, AutoTokenizer

    c = AutoConfig.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    d, layers = c.hidden_size, c.num_hidden_layers
    kv = d * c.num_key_value_heads // c.num_attention_heads
    decoder = layers * (2 * d * d + 2 * d * kv + 3 * d * c.intermediate_size)
    head = c.vocab_size * d
    total = 0.0
    for prompt in prompts:
        p = len(tok.apply_chat_template([{"role": "user", "content": prompt}],
                                        add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"])
        context = p * p / 2 + tokens * (p + tokens / 2)  # summed over the tokens computed
        total += 2 * decoder * (p + tokens - 1) + 2 * head * tokens + 4 * layers * d * context
    return total


VARIANTS = (("float32", "none"), ("bfloat16", "none"), ("bfloat16", "w8a8-int8"))


def compare(model: str, base: str, adapter: Path, prompts: list[str], tokens: int,
            extra: list[str], rounds: int, chosen: tuple[str, str]) -> None:
    """fp32, bf16 and int8 served in turn (the order rotates each round), with the golden
    accuracy of each; then whether the plan's `chosen` (dtype, quantization) was fastest."""
    from llmops.config import load_model

    golden = load_model(model).golden_sets()
    rates: dict[tuple[str, str], list[float]] = {v: [] for v in VARIANTS}
    accuracy: dict[tuple[str, str], list[float]] = {v: [] for v in VARIANTS}
    for n in range(rounds):
        for variant in VARIANTS[n % 3:] + VARIANTS[:n % 3]:
            out = vllm_endpoint(model, base, adapter, prompts, tokens, extra, variant[1],
                                golden, dtype=variant[0])
            rates[variant].append(out["tokens_per_s"])
            accuracy[variant].append(out["golden_accuracy"])
            print(f"round {n + 1}, {out['mode']}: {out['tokens_per_s']} tok/s, TTFT p50 "
                  f"{out['ttft_p50_s']} s, golden accuracy {out['golden_accuracy']:.3f} "
                  f"(server start {out['start_s']} s)", flush=True)
    means = {v: sum(r) / len(r) for v, r in rates.items()}
    best = max(VARIANTS, key=means.__getitem__)
    for v in VARIANTS:
        golden_of = ", ".join(f"{a:.3f}" for a in accuracy[v])
        mark = "  <- the plan's choice" if v == chosen else ""
        print(f"{v[0]} {v[1]}: mean {means[v]:.1f} tok/s "
              f"({means[v] / max(means[best], 1e-9):.2f}x the fastest), golden {golden_of}"
              f"{mark}", flush=True)
    verdict = "is" if best == chosen else "is NOT"
    print(f"the plan's choice {verdict} the fastest ({best[0]} {best[1]})", flush=True)


def compare_compiled(model: str, base: str, adapter: Path, prompts: list[str], tokens: int,
                     extra: list[str], rounds: int) -> None:
    """The plan's artefact served compiled (torch.compile, the compile cache warm after its
    first start) and eager in turn, N rounds in alternating order: what compiling costs at
    each start against what it gives back in decode speed, with the golden accuracy."""
    from llmops.config import load_model

    golden = load_model(model).golden_sets()
    seen: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for n in range(rounds):
        for eager in ((False, True) if n % 2 == 0 else (True, False)):
            out = vllm_endpoint(model, base, adapter, prompts, tokens, extra, golden=golden,
                                enforce_eager=eager)
            seen[eager].append(out)
            print(f"round {n + 1}, {out['mode']}: {out['tokens_per_s']} tok/s, TTFT p50 "
                  f"{out['ttft_p50_s']} s, golden accuracy {out['golden_accuracy']:.3f} "
                  f"(server start {out['start_s']} s)", flush=True)

    def mean(eager: bool, key: str) -> float:
        return sum(float(o[key]) for o in seen[eager]) / len(seen[eager])
    compiled, eager_rate = mean(False, "tokens_per_s"), mean(True, "tokens_per_s")
    extra_start = mean(False, "start_s") - mean(True, "start_s")
    print(f"compiled: mean {compiled:.1f} tok/s, start {mean(False, 'start_s'):.1f} s; eager: "
          f"{eager_rate:.1f} tok/s ({eager_rate / max(compiled, 1e-9):.2f}x), start "
          f"{mean(True, 'start_s'):.1f} s", flush=True)
    if compiled > eager_rate:
        tokens_to_break_even = extra_start / (1 / eager_rate - 1 / compiled)
        print(f"compiling pays for its {extra_start:.0f} s of start after "
              f"{tokens_to_break_even:,.0f} generated tokens at full load", flush=True)
    else:
        print(f"compiling costs {extra_start:.0f} s per start and decodes no faster",
              flush=True)


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
                        help="extra vLLM argument (repeatable; serve.extra_args' allowlist), "
                        "e.g. --vllm-arg=--max-num-batched-tokens=2048")
    parser.add_argument("--quantization", choices=["none", "w8a8-int8"],
                        help="override the compute plan's artefact")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"],
                        help="override the compute plan's served dtype")
    parser.add_argument("--compare", type=int, default=0, metavar="N",
                        help="then serve fp32, bf16 and int8 in turn, N rounds")
    parser.add_argument("--compare-compiled", type=int, default=0, metavar="N",
                        help="then serve the plan's artefact compiled and eager in turn, "
                        "N rounds")
    args = parser.parse_args()

    from llmops.compute import machine_plan
    from llmops.config import load_model
    from llmops.models.base import ensure_base_model

    plan = machine_plan()
    print(f"CPU {plan.cpu_model}: ISA {plan.isa}; {plan.line()}", flush=True)
    spec = load_model(args.model)
    base = str(ensure_base_model(spec.base_model))
    adapter = latest_adapter(args.model)
    prompts = prompts_for(args.model, args.requests)
    print(f"{args.model}: adapter {adapter.name}, {args.requests} requests × {args.tokens} "
          f"tokens, {os.cpu_count()} cores", flush=True)
    import torch
    from peak import matmul_peak

    torch.set_num_threads(os.cpu_count() or 1)
    dtype = args.dtype or plan.serve_dtype
    int8 = (args.quantization or plan.quantization) == "w8a8-int8"
    # Only what this CPU multiplies in hardware is timed: an emulated matmul takes minutes.
    peak_dtype = torch.bfloat16 if dtype == "bfloat16" and plan.bf16_native else torch.float32
    int8_native = plan.emulated_cost("bfloat16") is None and int8

    def peaks() -> tuple[float, float]:
        return matmul_peak(peak_dtype), matmul_peak(torch.int8) if int8_native else 0.0

    peak, int8_peak = peaks()
    served = vllm_endpoint(args.model, base, adapter, prompts, args.tokens, args.vllm_arg,
                           args.quantization, dtype=args.dtype)
    again = peaks()
    peak, int8_peak = max(peak, again[0]), max(int8_peak, again[1])
    print(f"vLLM ({served['mode']}): {served['tokens_per_s']} tok/s, TTFT p50 "
          f"{served['ttft_p50_s']} s p99 {served['ttft_p99_s']} s, latency p50 "
          f"{served['p50_s']} s p99 {served['p99_s']} s, {served['errors']} errors "
          f"(server start {served['start_s']} s)", flush=True)
    flops = model_flops(base, prompts, args.tokens)
    used = flops / served["duration_s"]
    print(f"model FLOP/s {used / 1e9:.0f} G = {used / peak:.0%} of the {peak_dtype} matmul peak "
          f"measured here ({peak / 1e9:.0f} G); with every FLOP at that peak, these requests "
          f"would take {flops / peak:.2f} s: {args.requests * args.tokens * peak / flops:.0f} "
          "tok/s", flush=True)
    if int8_peak:
        print(f"int8 matmul peak measured here: {int8_peak / 1e9:.0f} G ({int8_peak / peak:.2f}x "
              f"bf16): the endpoint used {used / int8_peak:.0%} of it", flush=True)
    if args.compare:
        compare(args.model, base, adapter, prompts, args.tokens, args.vllm_arg, args.compare,
                (plan.serve_dtype, plan.quantization))
    if args.compare_compiled:
        compare_compiled(args.model, base, adapter, prompts, args.tokens, args.vllm_arg,
                         args.compare_compiled)
    if args.skip_baseline:
        return
    base_rates = transformers_runs(base, adapter, prompts, args.tokens, args.sequential)
    for name, rate in base_rates.items():
        print(f"transformers {name.removesuffix('_tok_s')}: {rate:.1f} tok/s → vLLM is "
              f"{served['tokens_per_s'] / rate:.1f}×", flush=True)


if __name__ == "__main__":
    main()
