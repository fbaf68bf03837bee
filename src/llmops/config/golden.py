"""Golden sets: questions whose answers the base model cannot know, and how answers are scored.

Read and checked when a model is loaded, so a bad line exits 2 before any training.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.errors import UsageError


@dataclass(frozen=True)
class GoldenItem:
    question: str
    answer: str


def json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line of a JSONL file; a line that is
    not JSON is a UsageError that names it."""
    for n, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield n, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{n}: not a JSON object: {exc.msg}") from exc


def read_golden(path: Path) -> list[GoldenItem]:
    """A golden set: JSONL rows with non-empty 'question' and 'answer' strings (a row
    marked `"example": true`, from `llmops init`'s template, is refused)."""
    items = []
    for n, row in json_rows(path):
        if not isinstance(row, dict) or not all(
            isinstance(row.get(k), str) and row[k].strip() for k in ("question", "answer")
        ):
            raise UsageError(f"{path}:{n}: a golden row needs non-empty 'question' and 'answer'")
        if row.get("example") is True:  # `llmops init`'s template: never scored as is
            raise UsageError(f"{path}:{n}: an example row of `llmops init`'s template: "
                             "replace the examples with your own questions and answers")
        items.append(GoldenItem(row["question"], row["answer"]))
    if not items:
        raise UsageError(f"{path}: the golden set is empty")
    return items


def answer_matches(answer: str, expected: str, match: str) -> bool:
    """Score one answer: 'contains' (case-insensitive) or 'exact' (after trimming)."""
    if match == "exact":
        return answer.strip().lower() == expected.strip().lower()
    return expected.lower() in answer.lower()
