"""Evaluation suites: more question sets asked of the evaluation server while it is up
(kept capabilities, safety probes, lm-evaluation-harness tasks), for every role it serves
(base, candidate, production), through the same engine as the golden set.

A suite turns its answers into metrics per role (which gate rules in validation/<model>.yml
can name, and the gate report's table shows for base, production and candidate), records
per question (the evaluation report and MLflow keep them), and a section of the gate report
that says what failed and why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from llmops.errors import CheckFailed
from llmops.evaluation.answercache import AnswerCache, CachedChat, Chat, DirectChat

Item = TypeVar("Item")
Reply = TypeVar("Reply")


@dataclass(frozen=True)
class EvalEndpoint:
    """An evaluation server: an OpenAI-compatible API serving each of `roles` under its
    name ("base", "candidate", "production", "candidate_adapter": the candidate's adapter
    when the candidate is served as merged or int8 weights).

    With `start`, the server is started on demand: `url()` starts it (once) and returns
    its …/v1; with `cache`, what the roles answered before comes from it (`chat()`), so a
    server whose every request is cached is never started."""

    base_url: str  # …/v1 of a running server ("" when `start` starts it)
    api_key: str
    roles: tuple[str, ...]
    max_tokens: int
    concurrency: int
    cache: AnswerCache | None = None
    start: Callable[[], str] | None = None
    names: Mapping[str, str] = field(default_factory=dict)  # role → served name, if not it

    def served(self, role: str) -> str:
        """The model name a request for `role` asks the server for."""
        return self.names.get(role, role)

    def url(self) -> str:
        """The server's …/v1, started now if it is started on demand and not yet up."""
        return self.start() if self.start is not None else self.base_url

    def chat(self) -> Chat:
        """Ask the roles: from the cache first, then the server (`url()`), on a miss."""
        return CachedChat(self.cache, lambda: DirectChat(self.url(), self.api_key,
                                                            self.names))


@dataclass
class SuiteResult:
    name: str
    metrics: dict[str, dict[str, float]]  # role → metric → value
    records: list[dict[str, Any]] = field(default_factory=list)  # one per question and role
    lines: list[str] = field(default_factory=list)  # the gate report's section (Markdown)


class Suite(Protocol):
    """Run once per evaluation server, with the roles that server serves (`EvalEndpoint.roles`:
    the base model and the LoRA roles on one, each merged or int8 model on its own; see
    `llmops.evaluation.served`). The runs' metrics and records are merged
    (`merge_results`), and the report section is written once, from the merged result, so
    it shows every role side by side."""

    name: str

    def run(self, endpoint: EvalEndpoint) -> SuiteResult: ...

    def section(self, result: SuiteResult) -> list[str]: ...


def merge_results(results: list[SuiteResult]) -> SuiteResult:
    """One suite's results from several servers as one: metrics by role, and the records of
    every run in turn (the section is the suite's to write: `finish`)."""
    metrics: dict[str, dict[str, float]] = {}
    records: list[dict[str, Any]] = []
    for result in results:
        for role, values in result.metrics.items():
            metrics.setdefault(role, {}).update(values)
        records += result.records
    return SuiteResult(results[0].name, metrics, records)


def finish(suite: Suite, results: list[SuiteResult]) -> SuiteResult:
    """The suite's results from every server, merged, with its report section."""
    merged = merge_results(results)
    merged.lines = suite.section(merged)
    return merged


def ask_every_role(endpoint: EvalEndpoint, items: Sequence[Item],
                   ask_one: Callable[[Chat, str, Item], Reply], what: str) -> list[Reply]:
    """`ask_one(chat, role, item)` for every item and every role of the endpoint, the items
    of one role in flight together, one role at a time (a vLLM-CPU batch must not mix the
    base with an adapter: llmops.evaluation.evalserve.generate). `chat` is the endpoint's
    (`EvalEndpoint.chat`: cached answers first). Replies in order, role by role; a request vLLM
    refuses is a CheckFailed naming `what` and the role."""
    from openai import APIError

    chat = endpoint.chat()
    replies: list[Reply] = []
    for role in endpoint.roles:
        with ThreadPoolExecutor(max(1, min(endpoint.concurrency, len(items)))) as pool:
            futures = [pool.submit(ask_one, chat, role, item) for item in items]
            for future in futures:
                try:
                    replies.append(future.result())
                except APIError as exc:
                    raise CheckFailed(f"vLLM could not answer {what} with {role!r}: "
                                      f"{exc}") from exc
    return replies
