"""A first evaluation's time with the next vLLM server started while the current one
answers (`evalserve.PRESTART_NEXT`, the default) against one server after the other (the
baseline: how evaluation ran before), in alternating rounds: the same candidate, settings
and suites, the answer cache empty each time (a fresh state folder).

    .venv/bin/python benchmarks/eval_prestart.py --adapter .llmops/runs/support-bot/<run>
    .venv/bin/python benchmarks/eval_prestart.py --model tiny --rounds 3   # a random adapter
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="support-bot")
    parser.add_argument("--adapter", type=Path, help="a trained adapter's folder (default: "
                        "a random rank-16 adapter of the model's base)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from handoff import model_as_evaluated, random_adapter

    from llmops.evaluation import evalserve
    from llmops.evaluation.evaluate import evaluate

    spec, base, settings = model_as_evaluated(args.model)
    times: dict[str, list[float]] = {"prestart": [], "one after the other": []}
    accuracy: dict[str, list[float]] = {v: [] for v in times}
    with tempfile.TemporaryDirectory() as scratch:
        adapter = args.adapter or random_adapter(base, Path(scratch) / "run")
        for n in range(args.rounds):
            order = list(times) if n % 2 == 0 else list(reversed(times))
            for variant in order:
                evalserve.PRESTART_NEXT = variant == "prestart"
                # A fresh state folder: nothing answered before, nothing built before.
                os.environ["LLMOPS_HOME"] = tempfile.mkdtemp(dir=scratch)
                started = time.perf_counter()
                report = evaluate(spec, base, {"candidate": adapter}, settings,
                                  {"candidate": "merged"})
                seconds = time.perf_counter() - started
                times[variant].append(seconds)
                accuracy[variant].append(report.metrics["candidate"]["golden_accuracy"])
                print(f"round {n + 1}, {variant}: {seconds:.1f} s; candidate golden "
                      f"{accuracy[variant][-1]:.3f}, base "
                      f"{report.metrics['base']['golden_accuracy']:.3f}", flush=True)
    took = {v: statistics.mean(t) for v, t in times.items()}
    print(f"prestart {took['prestart']:.1f} s, one after the other "
          f"{took['one after the other']:.1f} s: "
          f"{took['one after the other'] / took['prestart']:.2f}x")


if __name__ == "__main__":
    main()
