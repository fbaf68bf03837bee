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
    """The running evaluation server: an OpenAI-compatible API serving each role under its
    name ("base", "candidate", "production")."""

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
    name: str

    def run(self, endpoint: Endpoint) -> SuiteResult: ...
