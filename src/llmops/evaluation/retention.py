"""Kept capabilities (catastrophic forgetting): the retention set of a model.

A retention set holds prompts the base model answers correctly (general knowledge,
arithmetic, instruction following, formatting, simple reasoning). `llmops build-retention`
makes it once: the base model, served by vLLM, answers a candidate pool
(`validation/retention/pool.jsonl`) and the items it gets right are kept, with the
provenance (base model digest, pool digest, engine version, date) beside them.

At evaluation, every role (base, candidate, production) answers the set through the same
server as the golden set; `retention_kept` is the share each answers correctly (the base:
about 1.0 by construction, at temperature 0), and a gate rule (`retention_kept min 0.9`)
refuses a candidate that forgot what its base could do. The gate report lists the items
the candidate lost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from llmops.config import ModelSpec
from llmops.config.golden import json_rows
from llmops.config.paths import resolve_in_repo
from llmops.data.reader import iter_conversations
from llmops.errors import UsageError
from llmops.evaluation.answercache import Chat
from llmops.evaluation.served import ROLES
from llmops.evaluation.suite import EvalEndpoint, SuiteResult, ask_every_role
from llmops.redact import redact

Match = Literal["word", "cased", "starts", "exact"]
MATCHES: tuple[str, ...] = ("word", "cased", "starts", "exact")
METRIC = "retention_kept"
EXCERPT = 80


@dataclass(frozen=True)
class RetentionItem:
    """One prompt and what a right answer holds: any of `answers`, as `match` says."""

    id: str
    category: str
    question: str
    answers: tuple[str, ...]
    match: Match = "word"

    def to_row(self) -> dict[str, Any]:
        answer: str | list[str] = self.answers[0] if len(self.answers) == 1 else \
            list(self.answers)
        return {"id": self.id, "category": self.category, "question": self.question,
                "answer": answer, "match": self.match}


def _phrase(expected: str) -> str:
    """A regex for `expected` as whole words (a digit or letter may not touch either end)."""
    return r"(?<![0-9A-Za-z])" + re.escape(expected.strip()) + r"(?![0-9A-Za-z])"


def is_right(answer: str, item: RetentionItem) -> bool:
    """Score one answer.

    word: an expected answer appears as whole words, ignoring case ("Paris" in "It is
    Paris."; "4" not in "14"); cased: the same, case-sensitive ("CAT" for "uppercase");
    starts: the answer begins with it, ignoring case and leading punctuation ("Yes, it
    is"); exact: the whole answer, trimmed, ignoring case and a final full stop."""
    text = answer.strip()
    for expected in item.answers:
        if item.match == "word" and re.search(_phrase(expected), text, re.IGNORECASE):
            return True
        if item.match == "cased" and re.search(_phrase(expected), text):
            return True
        if item.match == "starts" and re.match(
                r"[\W_]*" + _phrase(expected), text, re.IGNORECASE):
            return True
        if item.match == "exact" and \
                text.rstrip(".").strip().lower() == expected.strip().lower():
            return True
    return False


def read_items(path: Path) -> list[RetentionItem]:
    """A pool or a retention set: JSONL rows {id, category, question, answer (a string or a
    list of strings, any of which is right), match}; UsageError names the line."""
    if not path.is_file():
        raise UsageError(f"{path}: not found")
    items: list[RetentionItem] = []
    seen: set[str] = set()
    for n, row in json_rows(path):
        answer = row.get("answer") if isinstance(row, dict) else None
        answers = [answer] if isinstance(answer, str) else answer
        if not isinstance(row, dict) or not all(
                isinstance(row.get(k), str) and row[k].strip() for k in ("id", "question")) \
                or not isinstance(answers, list) or not answers \
                or not all(isinstance(a, str) and a.strip() for a in answers):
            raise UsageError(f"{path}:{n}: a retention row needs non-empty 'id', 'question' "
                             "and 'answer' (a string or a list of strings)")
        match = row.get("match", "word")
        if match not in MATCHES:
            raise UsageError(f"{path}:{n}: match: {match!r} is not one of {', '.join(MATCHES)}")
        if row["id"] in seen:
            raise UsageError(f"{path}:{n}: id {row['id']!r} appears twice")
        seen.add(row["id"])
        items.append(RetentionItem(row["id"], str(row.get("category", "")), row["question"],
                                   tuple(answers), match))
    return items


@dataclass(frozen=True)
class Reply:
    role: str
    item: RetentionItem
    answer: str
    finish_reason: str
    correct: bool


def _ask_one(chat: Chat, role: str, item: RetentionItem, max_tokens: int) -> Reply:
    reply = chat(role, [{"role": "user", "content": item.question}], max_tokens=max_tokens,
                 temperature=0.0)
    return Reply(role, item, reply.text, reply.finish_reason, is_right(reply.text, item))


def ask(endpoint: EvalEndpoint, items: Sequence[RetentionItem], max_tokens: int) -> list[Reply]:
    """Every item to every role of the endpoint, greedy (answers given before: from the
    endpoint's cache)."""
    return ask_every_role(endpoint, items,
                          lambda chat, role, item: _ask_one(chat, role, item, max_tokens),
                          "the retention set")


def kept_share(replies: Sequence[Reply], role: str) -> float:
    mine = [r for r in replies if r.role == role]
    return sum(r.correct for r in mine) / len(mine) if mine else float("nan")


def _excerpt(text: str) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= EXCERPT else flat[: EXCERPT - 1] + "…"


def section_lines(records: Sequence[Mapping[str, Any]], set_path: str) -> list[str]:
    """The gate report's section: each role's kept share, then the items the candidate got
    wrong (that the base answers right, by the set's construction)."""
    roles = [r for r in ROLES if any(x["role"] == r for x in records)]
    roles += sorted({x["role"] for x in records} - set(roles))
    n = len({x["id"] for x in records})
    lines = [f"Retention set `{set_path}`: {n} prompts the base model answered correctly "
             "when the set was built (`llmops build-retention`).", ""]
    for role in roles:
        right = sum(bool(x["correct"]) for x in records if x["role"] == role)
        lines.append(f"- {role}: kept {right}/{n} ({right / n:.1%})")
    lost = [x for x in records if x["role"] == "candidate" and not x["correct"]]
    if "candidate" in roles:
        if not lost:
            lines += ["", "The candidate answers every prompt of the set correctly."]
        else:
            lines += ["", f"Lost by the candidate ({len(lost)}):", "",
                      "| id | question | expected | candidate's answer |", "|---|---|---|---|"]
            lines += [f"| {x['id']} | {_excerpt(x['question'])} | "
                      f"{_excerpt(' / '.join(x['answers']))} ({x['match']}) | "
                      f"{_excerpt(x['answer']) or '(empty)'} |" for x in lost]
    return lines


def _folded(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def trained_on(spec: ModelSpec, items: Sequence[RetentionItem], what: str) -> None:
    """Refuse retention prompts that the model's training data asks (case, punctuation and
    spacing folded; an opening before the question counts too): a prompt trained on
    measures memory, not a kept capability, and would hide forgetting."""
    folded = {_folded(i.question): i.id for i in items}
    found: list[str] = []
    for ref in spec.datasets:
        if ref.split != "train":
            continue
        for line, conversation in iter_conversations(ref):
            asked = " ".join(_folded(m["content"]) for m in conversation if m["role"] == "user")
            found += [f"{item_id} ({ref.path.name}:{line})" for q, item_id in folded.items()
                      if q and f" {q} " in f" {asked} "]
    if found:
        raise UsageError(f"{what}: {len(found)} prompt(s) of the retention set are asked in "
                         f"the training data: {', '.join(found[:5])}"
                         f"{' …' if len(found) > 5 else ''}; a prompt trained on measures "
                         "memory, not a kept capability: remove it from the set (or the pool) "
                         "or from the data")


def provenance_path(set_path: Path) -> Path:
    """`validation/retention/<model>.provenance.json` beside `<model>.jsonl`."""
    return set_path.with_name(set_path.name.removesuffix(".jsonl") + ".provenance.json")


class RetentionSuite:
    """The retention set asked of every role; metric `retention_kept` per role."""

    name = "Kept capabilities (retention set)"

    def __init__(self, set_path: str, items: list[RetentionItem], max_tokens: int) -> None:
        self.set_path, self.items, self.max_tokens = set_path, items, max_tokens

    def run(self, endpoint: EvalEndpoint) -> SuiteResult:
        replies = ask(endpoint, self.items, self.max_tokens)
        metrics = {role: {METRIC: kept_share(replies, role)} for role in endpoint.roles}
        records = [{"suite": "retention", "role": r.role, **asdict(r.item),
                    "answer": redact(r.answer), "finish_reason": r.finish_reason,
                    "correct": r.correct} for r in replies]
        return SuiteResult(self.name, metrics, records)

    def section(self, result: SuiteResult) -> list[str]:
        return section_lines(result.records, self.set_path)


def read_set(spec: ModelSpec) -> list[RetentionItem] | None:
    """The model's retention set, when `eval.retention` is configured; a set not yet built
    is a usage error that says how to build it."""
    settings = spec.validation.eval.retention
    if settings is None:
        return None
    path = resolve_in_repo(settings.path)
    if not path.is_file():
        raise UsageError(f"validation/{spec.name}.yml: eval.retention.path: {settings.path} "
                         f"not found: build it with `llmops build-retention {spec.name}`")
    items = read_items(path)
    if not items:
        raise UsageError(f"{settings.path}: the retention set is empty: the base model "
                         "answered none of the pool; widen the pool and build it again")
    return items


def build(spec: ModelSpec) -> RetentionSuite | None:
    """The model's retention suite (`read_set`), refused when the training data asks one
    of its prompts (`trained_on`)."""
    settings, items = spec.validation.eval.retention, read_set(spec)
    if settings is None or items is None:
        return None
    trained_on(spec, items, settings.path)
    return RetentionSuite(settings.path, items, settings.max_new_tokens)
