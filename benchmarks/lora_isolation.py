"""Runtime LoRA on the engine in use: the isolation harness (llmops.serve.isolation_run) on
the serving environment's vLLM, with a model's base (tiny by default) and two random adapters
shaped by its training config. Prints each check with its evidence and the verdict, and
keeps the report in ~/.cache/llmops/lora-isolation/vllm-<version>.json, where
`llmops.serve.isolation.load_verdict` reads it. Three server starts; minutes on 2 cores.

    .venv/bin/python benchmarks/lora_isolation.py
    .venv/bin/python benchmarks/lora_isolation.py --model tiny --no-eager
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="whose base model and LoRA shape")
    parser.add_argument("--eager", action=argparse.BooleanOptionalAction, default=True,
                        help="--enforce-eager (default): no compile on start")
    args = parser.parse_args()

    from llmops.compute import serve_settings
    from llmops.config import load_deploy
    from llmops.serve.isolation_run import check_engine

    # The base with adapters: no merged or int8 weights.
    settings = serve_settings(load_deploy("local"), args.model).model_copy(
        update={"serve": "lora", "quantization": "none", "enforce_eager": args.eager})
    started = time.perf_counter()
    report, path = check_engine(settings, args.model)
    seconds = time.perf_counter() - started
    print(f"{report.engine}, {report.server}; {len(report.prompts)} prompts × "
          f"{report.max_tokens} tokens, greedy; {seconds:.0f} s")
    for role, answers in report.references.items():
        print(f"  {role} alone: {answers[0]!r}")
    for check in report.checks:
        print(f"{'PASS' if check.passed else 'FAIL'} {check.name}: {check.detail}")
        for line in check.evidence:
            print(f"    {line}")
    print(f"runtime_lora_ok: {report.runtime_lora_ok} ({report.reason})")
    print(f"report: {path}")


if __name__ == "__main__":
    main()
