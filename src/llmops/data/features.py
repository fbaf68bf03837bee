"""One streaming pass over a dataset file: one row of check results per example.

Memory stays bounded by the feature table (a few bytes per example per column) and the
fingerprint sets for duplicates; the rows themselves are never held, and no read holds more
than `max_line_bytes` of the file, whatever its lines or nesting. Each example is
reported under its most basic failure only: a line that is not JSON is not also counted as
missing fields, and a row with a schema error has no token count (so it does not fail
`length` too).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

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
MAX_LINE_BYTES: int = DataChecks.model_fields["max_line_bytes"].default
BLOCK = 1 << 20  # what one read takes when a file is skipped or counted, not parsed
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Unreadable:
    """A row that fails `parse` for a reason worth telling: what is wrong and what to do.

    (A line that is simply not JSON or not UTF-8 is None, as ever.)"""

    reason: str


def too_long(size: int, limit: int) -> Unreadable:
    """The verdict on a line over the limit: its size, the limit, and the two ways out."""
    return Unreadable(f"{size} bytes exceeds max_line_bytes {limit}; split the row or raise "
                      "data.max_line_bytes")


TOO_DEEP = Unreadable("nested too deeply to parse (Python's JSON parser recurses once per "
                      "level); flatten the row")


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
    unreadable: dict[int, str] = field(default_factory=dict)  # line: why it failed `parse`

    def frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.columns).astype({"token_count": "Int64"})


def _raw_lines(fh: IO[bytes], first_line: int, max_bytes: int | None,
               end: int | None = None) -> Iterator[tuple[int, bytes | int]]:
    """(line number, its bytes, or its length when over `max_bytes`) from `fh`'s position
    up to byte `end`. An over-long line is skipped a block at a time rather than read, so no
    line costs more memory than `max_bytes`, however long it is."""
    limit = -1 if max_bytes is None else max_bytes + 1
    n = first_line
    while end is None or fh.tell() < end:
        raw = fh.readline(limit)
        if not raw:
            return
        if max_bytes is not None and len(raw) > max_bytes and not raw.endswith(b"\n"):
            size = len(raw)
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(BLOCK)
                size += len(raw)
            yield n, size - (1 if raw.endswith(b"\n") else 0)
        else:
            yield n, raw
        n += 1


def _parsed(n: int, raw: bytes | int, max_bytes: int | None) -> Any:
    """The row a line holds: an object, None (not JSON or not UTF-8), or Unreadable."""
    if isinstance(raw, int):
        return too_long(raw, max_bytes or 0)
    if n == 1 and raw.startswith(_BOM):
        raw = raw[3:]
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        return TOO_DEEP
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        return None


def _is_blank(raw: bytes | int) -> bool:
    return not isinstance(raw, int) and not raw.strip()


def stream_lines(path: Path, max_bytes: int | None = MAX_LINE_BYTES
                 ) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed object, None or Unreadable) per non-blank line; a BOM
    is fine. `max_bytes=None` reads lines of any length (the stages after the gate)."""
    with open(path, "rb") as fh:
        for n, raw in _raw_lines(fh, 1, max_bytes):
            if not _is_blank(raw):
                yield n, _parsed(n, raw, max_bytes)


_WS = re.compile(r"[ \t\n\r]*")


class _Window:
    """The undecoded rest of a .json file: text read a block at a time, from `pos` on."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.text, self.pos, self.eof = fh, "", 0, False
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()

    def fill(self, size: int = 0) -> None:
        data = self.fh.read(size or BLOCK)
        self.eof = not data
        self.text = self.text[self.pos:] + self.decoder.decode(data, final=self.eof)
        self.pos = 0

    def peek(self) -> str:
        """The next character after whitespace ('' at the end of the file)."""
        while True:
            self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text) or self.eof:
                return self.text[self.pos: self.pos + 1]
            self.fill()


def _element(w: _Window, decoder: json.JSONDecoder, limit: int) -> tuple[Any, bool]:
    """(the JSON value at the window's position, whether the file goes on being readable).

    A value cut off by the end of the window fails to parse, so the window grows until the
    value parses or passes `limit` characters; it doubles, so that a large value is parsed
    a few times, not once per block. One that ends exactly at the window's end may be cut
    off too (a number), so it is parsed again with more text."""
    while True:
        try:
            value, end = decoder.raw_decode(w.text, w.pos)
        except RecursionError:
            return TOO_DEEP, False
        except ValueError:
            if w.eof:
                return None, False
            held = len(w.text) - w.pos
            if held > limit:
                return Unreadable(f"no JSON value within max_line_bytes {limit} (split the "
                                  "element, write the rows as .jsonl, or raise "
                                  "data.max_line_bytes)"), False
            w.fill(max(BLOCK, min(held, limit + 1 - held)))
            continue
        if end == len(w.text) and not w.eof:
            w.fill()
            continue
        w.pos = end
        return value, True


def stream_json_array(path: Path, max_bytes: int | None = MAX_LINE_BYTES
                      ) -> Iterator[tuple[int, Any]]:
    """(1-based row, parsed value, None or Unreadable) per element of a .json file's array
    (a file holding one other value is one row).

    The elements are decoded one at a time from a window of the file, so memory is bounded
    by the largest element (at most `max_bytes`), not by the file. Where the next element
    starts is known only once this one parsed, so a row that fails ends the file."""
    limit = max_bytes if max_bytes is not None else 1 << 62
    decoder = json.JSONDecoder()
    done = 0  # rows yielded: a failure belongs to row done + 1
    with open(path, "rb") as fh:
        w = _Window(fh)
        try:
            first = w.peek()
            if first != "[":
                value, ok = _element(w, decoder, limit) if first else (None, False)
                yield 1, value if not ok or w.peek() == "" else None
                return
            w.pos += 1
            after = w.peek()
            if after == "]":
                w.pos += 1
            while after != "]":
                w.peek()  # to the element, past whitespace
                value, ok = _element(w, decoder, limit)
                done += 1
                yield done, value
                if not ok:
                    return
                after = w.peek()
                w.pos += 1
                if after not in (",", "]"):
                    yield done + 1, None
                    return
            if w.peek() != "":
                yield done + 1, None
        except UnicodeDecodeError:
            yield done + 1, None


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
    unreadable: dict[int, str] = {}
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
        if isinstance(obj, Unreadable):
            unreadable[n] = obj.reason
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
    return FeatureTable(cols, pii, keys, unreadable)


class Renderer:
    """The text the trainer will see, through the model's own chat template.

    Rendering one conversation per Jinja call costs more in call overhead than in the
    template itself, so conversations are rendered in bulk: the same template inside one
    loop over a chunk. This is used only after it rendered a probe exactly as
    `apply_chat_template` does, and a chunk that raises (a template refusing an example)
    is rendered row by row, so the refused example is found on its own line.

    A row's content can hold the separator, so the split is trusted only when the text holds
    exactly one separator per conversation; otherwise the chunk is rendered row by row. That
    count proves the framing because the separator overlaps no shift of itself (its first
    character occurs nowhere else in it): an occurrence cannot straddle a row's end and the
    separator after it, so every extra occurrence lies inside one row's text.
    """

    SEP = "\x00\x01llmops\x02"

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
        parts = str(text).split(self.SEP)
        if len(parts) != len(chunk) + 1 or parts[-1]:
            raise ValueError("a row holds the separator, or bulk rendering lost one")
        return parts[:-1]

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
    """(start byte, end byte, first line number) of `parts` line-aligned chunks.

    Lines are skipped and newlines counted a block at a time: a chunk, or one line, can be
    as large as the file."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as fh:
        for i in range(1, parts):
            fh.seek(size * i // parts)
            while (raw := fh.readline(BLOCK)) and not raw.endswith(b"\n"):
                pass  # to the next line start
            cuts.append(max(fh.tell(), cuts[-1]))
    cuts.append(size)
    bounds, line = [], 1
    with open(path, "rb") as fh:
        for start, end in zip(cuts, cuts[1:], strict=False):
            bounds.append((start, end, line))
            fh.seek(start)
            for at in range(start, end, BLOCK):
                line += fh.read(min(BLOCK, end - at)).count(b"\n")
    return bounds


def _lines_in(path: Path, start: int, end: int, first_line: int,
              max_bytes: int | None = MAX_LINE_BYTES) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as fh:
        fh.seek(start)
        for n, raw in _raw_lines(fh, first_line, max_bytes, end):
            if not _is_blank(raw):
                yield n, _parsed(n, raw, max_bytes)


def _extract_chunk(bounds: tuple[int, int, int]) -> FeatureTable:
    w = _WORK
    return extract(_lines_in(w["path"], *bounds, w["checks"].max_line_bytes), w["fmt"],
                   w["tokenizer"], w["checks"], w["refs"], dedupe=False)


def extract_file(path: Path, fmt: Format, tokenizer: Any, checks: DataChecks,
                 refs: References | None, workers: int,
                 min_parallel_bytes: int = 8 << 20) -> FeatureTable:
    """`extract` over a JSONL file, in `workers` forked processes when it is large enough;
    the result is the same as one serial pass (duplicates are decided in file order)."""
    import multiprocessing as mp

    if workers <= 1 or path.stat().st_size < min_parallel_bytes:
        return extract(stream_lines(path, checks.max_line_bytes), fmt, tokenizer, checks, refs)
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
        table.unreadable.update(part.unreadable)
    seen: set[bytes] = set()
    unique = table.columns["unique"]
    for i, key in enumerate(table.keys):
        if key is not None:
            unique[i] = key not in seen
            seen.add(key)
    return table
