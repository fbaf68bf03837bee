"""One streaming pass over a dataset file: one row of check results per example.

Memory stays bounded by the feature table (a few bytes per example per column) and the
fingerprint sets for duplicates; the rows themselves are never held. Each example is
reported under its most basic failure only: a line that is not JSON is not also counted as
missing fields, and a row with a schema error has no token count (so it does not fail
`length` too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.config import DataChecks
from llmops.data.formats import Format, to_messages
from llmops.data.scan import fingerprint, normalised, pii_kinds
from llmops.data.tokencount import TokenCounter

# Boolean columns, in report order, with what a passing row satisfies.
BOOL_CHECKS: dict[str, str] = {
    "parse": "a UTF-8 JSON object per line",
    "fields": "the format's required fields",
    "content": "every content a non-empty string",
    "roles": "every role in allowed_roles",
    "assistant": "at least one assistant turn",
    "system_first": "a system turn only first",
    "alternation": "no two consecutive turns of one role",
    "template": "renders through the model's chat template",
    "unique": "not an exact duplicate (case and space folded)",
    "no_leak": "no eval or golden example in training",
    "no_pii": "no PII or secrets",
}
TOKENIZE_CHUNK = 4096


@dataclass
class References:
    """What training data must not contain: eval examples and golden questions."""

    examples: set[bytes] = field(default_factory=set)
    questions: set[str] = field(default_factory=set)


@dataclass
class FeatureTable:
    """Columns of per-example results, plus PII kinds per offending line (never values)."""

    columns: dict[str, list[Any]]
    pii: dict[int, list[str]]
    keys: list[bytes | None] = field(default_factory=list)  # fingerprint per row

    def frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.columns).astype({"token_count": "Int64"})


def stream_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed object or None) per non-blank line; a BOM is fine."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                yield n, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                yield n, None


def stream_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """Rows of a .json file holding one array (parsed whole: JSON arrays cannot stream)."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = getattr(exc, "lineno", 1)
        yield line, None
        return
    yield from enumerate(rows if isinstance(rows, list) else [rows], start=1)


def _structure(msgs: list[dict[str, Any]] | None, fmt: Format, checks: DataChecks,
               allowed: set[str]) -> dict[str, bool]:
    out = dict.fromkeys(("fields", "content", "roles", "assistant", "system_first",
                         "alternation"), True)
    if msgs is None:
        out["fields"] = False
        return out
    out["content"] = all(isinstance(m["content"], str) and m["content"].strip() for m in msgs)
    if fmt.type == "completion":
        return out
    roles = [m["role"] for m in msgs]
    out["roles"] = all(r in allowed for r in roles)
    out["assistant"] = "assistant" in roles
    out["system_first"] = "system" not in roles[1:]
    if not checks.allow_consecutive_same_role:
        out["alternation"] = all(a != b for a, b in zip(roles, roles[1:], strict=False))
    return out


def extract(rows: Iterator[tuple[int, Any]], fmt: Format, tokenizer: Any, checks: DataChecks,
            refs: References | None, dedupe: bool = True) -> FeatureTable:
    """Compute every per-example check; tokenization is batched through the fast tokenizer.

    With `dedupe=False` (a chunk of a parallel run) `unique` is left to the caller, who
    decides it from `keys` in file order.
    """
    allowed = set(checks.allowed_roles)
    enabled = frozenset(checks.pii_kinds)
    allow = re.compile("|".join(f"(?:{p})" for p in checks.pii_allow)) if checks.pii_allow \
        else None
    cols: dict[str, list[Any]] = {k: [] for k in ("line", *BOOL_CHECKS, "token_count")}
    pii: dict[int, list[str]] = {}
    seen: set[bytes] | None = set() if dedupe else None
    keys: list[bytes | None] = []
    pending: list[tuple[int, list[dict[str, Any]]]] = []

    renderer = Renderer(tokenizer, fmt)
    count = TokenCounter(tokenizer)

    def flush() -> None:
        if pending:
            texts = renderer.render([m for _, m in pending])
            ok = [(row, t) for (row, _), t in zip(pending, texts, strict=True) if t is not None]
            for (row, _), t in zip(pending, texts, strict=True):
                if t is None:
                    cols["template"][row] = False
            for (row, _), n_tokens in zip(ok, count([t for _, t in ok]),
                                          strict=True):
                cols["token_count"][row] = n_tokens
            pending.clear()

    for n, obj in rows:
        row = len(cols["line"])
        msgs = to_messages(obj, fmt) if isinstance(obj, dict) else None
        feats = {"parse": isinstance(obj, dict)}
        feats.update(_structure(msgs, fmt, checks, allowed) if feats["parse"] else
                     dict.fromkeys(BOOL_CHECKS, True) | {"parse": False})
        feats.update(template=True, unique=True, no_leak=True, no_pii=True)
        cols["token_count"].append(None)
        if msgs is not None and all(feats.values()):
            text = "\n".join(m["content"] for m in msgs)
            key = fingerprint(text)
            keys.append(key)
            if seen is not None:
                feats["unique"] = key not in seen
                seen.add(key)
            if refs is not None:
                feats["no_leak"] = key not in refs.examples and not any(
                    m["role"] == "user" and normalised(m["content"]) in refs.questions
                    for m in msgs)
            kinds = pii_kinds(text, enabled, allow)
            if kinds:
                feats["no_pii"] = False
                pii[n] = sorted(kinds)
            pending.append((row, msgs))
        else:
            keys.append(None)
        cols["line"].append(n)
        for k in BOOL_CHECKS:
            cols[k].append(feats[k])
        if len(pending) >= TOKENIZE_CHUNK:
            flush()
    flush()
    return FeatureTable(cols, pii, keys)


class Renderer:
    """The text the trainer will see, through the model's own chat template.

    Rendering one conversation per Jinja call costs more in call overhead than in the
    template itself, so conversations are rendered in bulk: the same template inside one
    loop over a chunk. This is used only after it rendered a probe exactly as
    `apply_chat_template` does, and a chunk that raises (a template refusing an example)
    is rendered row by row, so the refused example is found on its own line.
    """

    SEP = "\x00\x01llmops\x01\x00"

    def __init__(self, tokenizer: Any, fmt: Format) -> None:
        self.tokenizer, self.fmt = tokenizer, fmt
        self.bulk: Any = None
        self.checked = False

    def _one(self, msgs: list[dict[str, Any]]) -> str | None:
        if self.fmt.type == "completion":
            return str(msgs[0]["content"])
        try:
            return str(self.tokenizer.apply_chat_template(msgs, tokenize=False))
        except Exception:  # jinja raises its own errors (e.g. raise_exception in templates)
            return None

    def _compile(self, probe: list[list[dict[str, Any]]]) -> None:
        self.checked = True
        template = getattr(self.tokenizer, "chat_template", None)
        if self.fmt.type == "completion" or not isinstance(template, str):
            return
        from transformers.utils.chat_template_utils import _compile_jinja_template

        loop = ("{%- for messages in conversations -%}" + template + self.SEP +
                "{%- endfor -%}")
        try:
            bulk = _compile_jinja_template(loop)
            got = self._bulk_render(bulk, probe)
        except Exception:
            return
        if got == [self._one(m) for m in probe]:
            self.bulk = bulk

    def _bulk_render(self, bulk: Any, chunk: list[list[dict[str, Any]]]) -> list[str]:
        text = bulk.render(conversations=chunk, add_generation_prompt=False,
                           **self.tokenizer.special_tokens_map)
        parts = str(text).split(self.SEP)[: len(chunk)]
        if len(parts) != len(chunk):
            raise ValueError("bulk rendering lost a conversation")
        return parts

    def render(self, chunk: list[list[dict[str, Any]]]) -> list[str | None]:
        if not self.checked:
            self._compile(chunk[:32])
        if self.bulk is not None:
            try:
                return list(self._bulk_render(self.bulk, chunk))
            except Exception:  # one example refused: find it row by row
                pass
        return [self._one(m) for m in chunk]


# --- parallel extraction over line-aligned chunks of a JSONL file --------------------------

_WORK: dict[str, Any] = {}  # set in the parent before forking: workers inherit it


def _chunk_bounds(path: Path, parts: int) -> list[tuple[int, int, int]]:
    """(start byte, end byte, first line number) of `parts` line-aligned chunks."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as fh:
        for i in range(1, parts):
            fh.seek(size * i // parts)
            fh.readline()  # move to the next line start
            cuts.append(max(fh.tell(), cuts[-1]))
    cuts.append(size)
    bounds, line = [], 1
    with open(path, "rb") as fh:
        for start, end in zip(cuts, cuts[1:], strict=False):
            bounds.append((start, end, line))
            fh.seek(start)
            line += fh.read(end - start).count(b"\n")
    return bounds


def _lines_in(path: Path, start: int, end: int, first_line: int) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as fh:
        fh.seek(start)
        n = first_line
        while fh.tell() < end:
            raw = fh.readline()
            if not raw:
                break
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.strip():
                try:
                    yield n, json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    yield n, None
            n += 1


def _extract_chunk(bounds: tuple[int, int, int]) -> FeatureTable:
    w = _WORK
    return extract(_lines_in(w["path"], *bounds), w["fmt"], w["tokenizer"], w["checks"],
                   w["refs"], dedupe=False)


def extract_file(path: Path, fmt: Format, tokenizer: Any, checks: DataChecks,
                 refs: References | None, workers: int,
                 min_parallel_bytes: int = 8 << 20) -> FeatureTable:
    """`extract` over a JSONL file, in `workers` forked processes when it is large enough;
    the result is the same as one serial pass (duplicates are decided in file order)."""
    import multiprocessing as mp

    if workers <= 1 or path.stat().st_size < min_parallel_bytes:
        return extract(stream_lines(path), fmt, tokenizer, checks, refs)
    _WORK.update(path=path, fmt=fmt, tokenizer=tokenizer, checks=checks, refs=refs)
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_extract_chunk, _chunk_bounds(path, workers))
    _WORK.clear()
    table = FeatureTable({k: [] for k in parts[0].columns}, {}, [])
    for part in parts:
        for k, v in part.columns.items():
            table.columns[k].extend(v)
        table.pii.update(part.pii)
        table.keys.extend(part.keys)
    seen: set[bytes] = set()
    unique = table.columns["unique"]
    for i, key in enumerate(table.keys):
        if key is not None:
            unique[i] = key not in seen
            seen.add(key)
    return table
