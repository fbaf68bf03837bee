"""A vLLM CPU server's start-up and throughput: how llmops starts it now against how it
started before, in alternating rounds, same model, same settings otherwise.

- now: the uni executor (the engine core runs the model in its own process; vLLM's CPU
  platform keeps it with VLLM_ENABLE_V1_MULTIPROCESSING=0) and vLLM's cache per machine
  (`~/.cache/llmops/vllm`: the architecture is inspected once per machine).
- before, warm: the multiprocess executor (a worker process that imports vLLM a third time),
  the cache of a state dir that already started a server.
- before, cold: the same with a fresh state dir (a new checkout, every test's home), whose
  first start inspects the architecture in a subprocess that imports vLLM again.

Each start is timed from launch to /health; then a streaming load test (N clients × T tokens)
gives the served tokens/s, so a faster start that serves slower would show.

    .venv/bin/python benchmarks/server_start.py                  # support-bot's base model
    .venv/bin/python benchmarks/server_start.py --rounds 3 --model tiny
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

VARIANTS = ("now", "before, warm", "before, cold")


@contextlib.contextmanager
def started_as(variant: str, warm_cache: Path) -> Iterator[None]:
    """llmops' server environment and arguments, or the ones it used before."""
    from llmops.serve import process

    if variant == "now":
        yield
        return
    real_env, real_args = process.server_env, process.vllm_args
    with tempfile.TemporaryDirectory() as cold:
        cache = warm_cache if variant == "before, warm" else Path(cold)

        def env(settings: Any, sockets: Path) -> dict[str, str]:
            return {**real_env(settings, sockets), "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
                    "VLLM_CACHE_ROOT": str(cache)}

        def args(*a: Any, **kw: Any) -> list[str]:
            out = real_args(*a, **kw)
            i = out.index("--distributed-executor-backend")
            return out[:i] + out[i + 2:]

        process.server_env, process.vllm_args = env, args  # type: ignore[assignment]
        try:
            yield
        finally:
            process.server_env, process.vllm_args = real_env, real_args


def one_start(model: str, base: str, settings: Any, prompts: list[str],
              tokens: int) -> tuple[float, float]:
    """(seconds to /health, tokens/s of the load test)."""
    from llmops.serve import process
    from llmops.serve.loadtest import load_test

    key = "bench-key"
    t0 = time.perf_counter()
    server = process.launch(f"{model}-start-bench",
                            lambda p: process.vllm_args(base, model, {}, p, settings),
                            settings, key)
    try:
        server.wait_healthy(settings.startup_timeout_s)
        start_s = time.perf_counter() - t0
        url = f"http://127.0.0.1:{server.port}/v1"
        load_test(url, model, prompts[:2], 2, 0.1, 4, api_key=key)  # warm-up
        result = load_test(url, model, prompts, len(prompts), 0.0, tokens,
                           min_requests=len(prompts), api_key=key)
    finally:
        server.kill()
    return start_s, float(result.summary()["tokens_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="support-bot")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=16, help="concurrent requests")
    parser.add_argument("--tokens", type=int, default=32, help="generated per request")
    args = parser.parse_args()

    from llmops.compute import machine_plan, serve_settings
    from llmops.config import load_deploy, load_model
    from llmops.config.golden import read_golden
    from llmops.models.base import ensure_base_model

    plan = machine_plan()
    print(f"CPU {plan.cpu_model}: ISA {plan.isa}; {plan.line()}", flush=True)
    spec = load_model(args.model)
    base = str(ensure_base_model(spec.base_model))
    # The base model alone (no adapter, no int8 conversion): what starts is the point.
    settings = serve_settings(load_deploy("local"), args.model).model_copy(
        update={"quantization": "none"})
    golden = [g.question for g in read_golden(spec.golden_paths()[0])]
    prompts = [golden[i % len(golden)] for i in range(args.requests)]
    starts: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as warm:
        with started_as("before, warm", Path(warm)):  # fill the state dir's cache
            one_start(args.model, base, settings, prompts[:2], 4)
        for n in range(args.rounds):
            for variant in VARIANTS[n % 3:] + VARIANTS[:n % 3]:
                with started_as(variant, Path(warm)):
                    start_s, rate = one_start(args.model, base, settings, prompts,
                                              args.tokens)
                starts[variant].append(start_s)
                rates[variant].append(rate)
                print(f"round {n + 1}, {variant}: started in {start_s:.1f} s, "
                      f"{rate:.1f} tok/s", flush=True)
    now_start = statistics.mean(starts["now"])
    now_rate = statistics.mean(rates["now"])
    for variant in VARIANTS:
        s, r = statistics.mean(starts[variant]), statistics.mean(rates[variant])
        print(f"{variant}: start {s:.1f} s (now is {s / now_start:.2f}x faster), "
              f"{r:.1f} tok/s (now serves {now_rate / max(r, 1e-9):.2f}x)")


if __name__ == "__main__":
    main()
