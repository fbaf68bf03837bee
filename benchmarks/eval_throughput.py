"""Evaluation throughput on the golden set: the gate's path through vLLM vs sequential
transformers.

Every path answers every golden question of a model with its fine-tuned candidate, greedy,
with the same max_new_tokens (validation/<model>.yml), in one script:

- **served** (the gate's subject since issue #22): the artefact `deploy/local.yml` serves
  (`llmops.evaluation.served`: int8 merged weights for support-bot, merged for tiny), built
  and cached as evaluation builds it, on its own vLLM CPU server, all questions in flight
  (`max_num_seqs`), exactly as `evalserve` asks them;
- **merged** (bf16, without the int8 rewrite) and **LoRA module** (the adapter on its base,
  the earlier gate's path and now `candidate_adapter`'s), the same way;
- **baseline**: transformers + PEFT `generate`, one question at a time, in this process.

vLLM is timed from a healthy server (its start-up is reported apart, and in the ratio
"with start" too); the golden accuracy of each path is printed beside its speed.

    .venv/bin/python benchmarks/eval_throughput.py --model support-bot --run <run-id>
    .venv/bin/python benchmarks/eval_throughput.py --paths served   # the new path alone
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from llmops.config import ModelSpec


def latest_run(model: str) -> str:
    from llmops.config.paths import state_subdir

    runs = sorted((p for p in (state_subdir("runs") / model).glob("*")
                   if (p / "adapter_config.json").is_file()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"no trained run of {model}: run `llmops release {model}` first")
    return runs[-1].name


@dataclass
class Measured:
    label: str
    seconds: float
    tokens: int
    answers: int
    accuracy: float
    start_s: float | None = None


def transformers_sequential(base: str, adapter: Path, spec: ModelSpec,
                            max_new_tokens: int) -> Measured:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmops.config.golden import answer_matches

    torch.set_num_threads(os.cpu_count() or 1)
    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter)).eval()
    items = [(gs.match, item) for gs, golden in spec.golden_sets() for item in golden]
    started, tokens, right = time.perf_counter(), 0, 0
    for match, item in items:
        ids = tok.apply_chat_template([{"role": "user", "content": item.question}],
                                      add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[0, ids["input_ids"].shape[1]:]
        tokens += int(new.shape[0])
        right += answer_matches(tok.decode(new, skip_special_tokens=True), item.answer, match)
    return Measured("transformers + PEFT, sequential", time.perf_counter() - started, tokens,
                    len(items), right / len(items))


def vllm_batched(label: str, model: str, weights: str, loras: dict[str, Path],
                 spec: ModelSpec, max_new_tokens: int, tokenizer: str) -> Measured:
    """Serve `weights` (the base with `loras`, or a merged/int8 folder alone) as evaluation
    serves it and answer the golden set through it as the role `candidate`."""
    from transformers import AutoTokenizer

    from llmops.compute import serve_settings
    from llmops.config import load_deploy
    from llmops.evaluation import evalserve
    from llmops.serve import process as serve

    settings = serve_settings(load_deploy("local"), model)
    golden = spec.golden_sets()
    name = "base" if loras else "candidate"
    t0 = time.perf_counter()
    server = serve.launch(
        f"{model}-bench", lambda p: serve.vllm_args(weights, name, loras, p, settings),
        settings, "bench-key")
    try:
        server.wait_healthy(settings.startup_timeout_s)
        start_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        answers = evalserve.generate(f"http://127.0.0.1:{server.port}/v1", ["candidate"],
                                     golden, max_new_tokens, settings.max_num_seqs,
                                     "bench-key")
        seconds = time.perf_counter() - t1
    finally:
        server.kill()
    tok = AutoTokenizer.from_pretrained(tokenizer)
    tokens = sum(len(tok(a.answer, add_special_tokens=False)["input_ids"]) for a in answers)
    return Measured(label, seconds, tokens, len(answers),
                    sum(a.correct for a in answers) / len(answers), start_s)


def main() -> None:
    from llmops.config import load_deploy, load_model
    from llmops.config.paths import state_subdir
    from llmops.evaluation.served import DESCRIPTIONS, artefact_weights, served_artefact

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="support-bot")
    parser.add_argument("--run", help="run id (default: the latest trained run)")
    parser.add_argument("--paths", default="served,merged,lora",
                        help="comma-separated vLLM paths to measure: served, merged, lora")
    args = parser.parse_args()
    spec = load_model(args.model)
    run = args.run or latest_run(args.model)
    folder = state_subdir("runs") / args.model / run
    base = yaml.safe_load((folder / "axolotl.resolved.yml").read_text())["base_model"]
    max_new = spec.validation.eval.max_new_tokens
    artefact = served_artefact(load_deploy("local"), args.model)
    cache = state_subdir("eval") / args.model / "bench"
    paths = args.paths.split(",")
    results: list[Measured] = []
    if "served" in paths:
        t0 = time.perf_counter()
        weights = artefact_weights(artefact, base, folder, cache)
        build_s = time.perf_counter() - t0
        print(f"served artefact ({DESCRIPTIONS[artefact]}): ready in {build_s:.1f} s "
              "(built once per candidate, then cached)", flush=True)
        results.append(vllm_batched(f"vLLM, served ({artefact})", args.model,
                                    str(weights or base),
                                    {} if weights else {"candidate": folder}, spec, max_new,
                                    base))
    if "merged" in paths and artefact != "merged":
        weights = artefact_weights("merged", base, folder, cache)
        results.append(vllm_batched("vLLM, merged bf16", args.model, str(weights), {}, spec,
                                    max_new, base))
    if "lora" in paths and artefact != "adapter":
        results.append(vllm_batched("vLLM, LoRA module", args.model, base,
                                    {"candidate": folder}, spec, max_new, base))
    baseline = transformers_sequential(base, folder, spec, max_new)
    results.append(baseline)
    n = baseline.answers
    print(f"model {args.model}, run {run}, {n} golden questions, max_new_tokens {max_new}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'path':<34} {'answers/s':>9} {'tokens/s':>9} {'seconds':>8} {'accuracy':>8} "
          f"{'vs baseline':>11} {'with start':>10}")
    for m in results:
        with_start = f"{baseline.seconds / (m.seconds + m.start_s):>9.1f}x" \
            if m.start_s is not None else ""
        print(f"{m.label:<34} {m.answers / m.seconds:>9.2f} {m.tokens / m.seconds:>9.1f} "
              f"{m.seconds:>8.1f} {m.accuracy:>8.2f} {baseline.seconds / m.seconds:>10.1f}x "
              f"{with_start:>10}" + (f"   (+ {m.start_s:.0f} s server start)"
                                     if m.start_s is not None else ""))


if __name__ == "__main__":
    main()
