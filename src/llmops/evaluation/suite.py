"""Evaluation suites: more question sets asked of the evaluation server while it is up
(kept capabilities, safety probes, lm-evaluation-harness tasks), for every role it serves
(base, candidate, production), through the same engine as the golden set.

A suite turns its answers into metrics per role (which gate rules in validation/<model>.yml
can name, and the gate report's table shows for base, production and candidate), records
per question (the evaluation report and MLflow keep them), and a section of the gate report
that says what failed and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Endpoint:
    """A running evaluation server: an OpenAI-compatible API serving each of `roles` under
    its name ("base", "candidate", "production", "candidate_adapter": the candidate's
    adapter when the candidate is served as merged or int8 weights)."""

    base_url: str  # …/v1
    api_key: str
    roles: tuple[str, ...]
    max_tokens: int
    concurrency: int


@dataclass
class SuiteResult:
    name: str
    metrics: dict[str, dict[str, float]]  # role → metric → value
    records: list[dict[str, Any]] = field(default_factory=list)  # one per question and role
    lines: list[str] = field(default_factory=list)  # the gate report's section (Markdown)


class Suite(Protocol):
    """Run once per evaluation server, with the roles that server serves (`Endpoint.roles`:
    the base model and the LoRA roles on one, each merged or int8 model on its own; see
    `llmops.evaluation.served`); the runs' results are merged (`merge_results`)."""

    name: str

    def run(self, endpoint: Endpoint) -> SuiteResult: ...


def merge_results(results: list[SuiteResult]) -> SuiteResult:
    """One suite's results from several servers as one: metrics by role, the records of
    every run, and the report lines of each run in turn (a run's lines that repeat the
    previous run's are kept once)."""
    if len(results) == 1:
        return results[0]
    metrics: dict[str, dict[str, float]] = {}
    records: list[dict[str, Any]] = []
    lines: list[str] = []
    previous: list[str] | None = None
    for result in results:
        for role, values in result.metrics.items():
            metrics.setdefault(role, {}).update(values)
        records += result.records
        if result.lines and result.lines != previous:
            lines += ([""] if lines else []) + result.lines
        previous = result.lines
    return SuiteResult(results[0].name, metrics, records, lines)
