"""Evaluation throughput on the golden set: batched through vLLM vs sequential transformers.

Both answer every golden question of a model with its fine-tuned adapter, greedy, with the
same max_new_tokens. vLLM is measured after its server is healthy (its start-up time is
reported apart); the baseline is `generate` one question at a time with PEFT.

    .venv/bin/python benchmarks/eval_throughput.py --model support-bot --run <run-id>
"""

from __future__ import annotations

import argparse
import os
import time
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


def transformers_sequential(base: str, adapter: Path, questions: list[str],
                            max_new_tokens: int) -> tuple[float, int]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter)).eval()
    started, tokens = time.perf_counter(), 0
    for q in questions:
        ids = tok.apply_chat_template([{"role": "user", "content": q}],
                                      add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        tokens += out.shape[1] - ids["input_ids"].shape[1]
    return time.perf_counter() - started, tokens


def vllm_batched(model: str, base: str, adapter: Path | None, spec: ModelSpec,
                 max_new_tokens: int) -> tuple[float, float, int]:
    """Serve `base` with `adapter` as a LoRA module (or `base` alone when it is already the
    merged model) and answer the golden set through it."""
    from llmops.config import load_deploy
    from llmops.evaluation import evalserve
    from llmops.serve import process as serve

    settings = load_deploy("local").serve_for(model)
    golden = spec.golden_sets()
    t0 = time.perf_counter()
    loras = {"candidate": adapter} if adapter else {}
    name = "base" if adapter else "candidate"
    server = serve.launch(
        f"{model}-bench", lambda p: serve.vllm_args(base, name, loras, p, settings), settings,
        "bench-key")
    try:
        server.wait_healthy(settings.startup_timeout_s)
        start_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        url = f"http://127.0.0.1:{server.port}/v1"
        answers = evalserve.generate(url, ["candidate"], golden, max_new_tokens,
                                     settings.max_num_seqs, "bench-key")
        seconds = time.perf_counter() - t1
    finally:
        server.kill()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    tokens = sum(len(tok(a.answer, add_special_tokens=False)["input_ids"]) for a in answers)
    return seconds, start_s, tokens


def main() -> None:
    from llmops.config import load_model
    from llmops.config.golden import read_golden
    from llmops.config.paths import state_subdir

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="support-bot")
    parser.add_argument("--run", help="run id (default: the latest trained run)")
    args = parser.parse_args()
    spec = load_model(args.model)
    run = args.run or latest_run(args.model)
    folder = state_subdir("runs") / args.model / run
    base = yaml.safe_load((folder / "axolotl.resolved.yml").read_text())["base_model"]
    questions = [g.question for p in spec.golden_paths() for g in read_golden(p)]
    max_new = spec.validation.eval.max_new_tokens
    from llmops.models.merge import merged_model

    v_s, v_start, v_tok = vllm_batched(args.model, base, folder, spec, max_new)
    m_s, m_start, m_tok = vllm_batched(args.model, str(merged_model(base, folder)), None, spec,
                                       max_new)
    t_s, t_tok = transformers_sequential(base, folder, questions, max_new)
    n = len(questions)
    print(f"model {args.model}, run {run}, {n} golden questions, max_new_tokens {max_new}")
    print(f"{'engine':<32} {'answers/s':>10} {'tokens/s':>9} {'seconds':>8} {'vs baseline':>12}")
    for label, sec, tok, start in (("vLLM CPU, batched, LoRA module", v_s, v_tok, v_start),
                                   ("vLLM CPU, batched, merged", m_s, m_tok, m_start),
                                   ("transformers + PEFT, sequential", t_s, t_tok, None)):
        extra = f"   (+ {start:.0f} s server start)" if start is not None else ""
        print(f"{label:<32} {n / sec:>10.2f} {tok / sec:>9.1f} {sec:>8.1f} {t_s / sec:>11.1f}x"
              + extra)


if __name__ == "__main__":
    main()
