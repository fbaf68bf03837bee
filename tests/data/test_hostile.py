"""Hostile data cannot stall or crash the data gate: each input gets its line-numbered verdict.

The big files are written at test time. Each heavy check runs in a forked child with a
generous time limit: a stalled regular expression holds the GIL, so a thread could not
time it out, and a stall would otherwise hang the whole run.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import traceback
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmops.config import DataChecks, DatasetRef
from llmops.data import features
from llmops.data.features import (
    Renderer,
    Unreadable,
    extract,
    extract_file,
    stream_json_array,
    stream_lines,
)
from llmops.data.formats import format_of
from llmops.data.reader import iter_conversations, read_conversations
from llmops.data.scan import pii_kinds
from llmops.data.tokencount import hf_counter
from llmops.errors import UsageError

CHAT = format_of({"type": "chat_template"}, "test")
HANG_GUARD_S = 240.0  # far above the seconds these take; only a stall reaches it
MiB = 1 << 20


def chat(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def guarded(fn: Callable[[], Any], timeout: float = HANG_GUARD_S) -> Any:
    """fn() in a forked child (which inherits the tokenizer), killed after `timeout` s."""
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send(("ok", fn()))
        except BaseException:
            send.send(("error", traceback.format_exc()))

    proc = ctx.Process(target=child)
    proc.start()
    send.close()
    try:
        if not receive.poll(timeout):
            pytest.fail(f"the data gate did not finish within {timeout:.0f} s")
        status, value = receive.recv()
    finally:
        proc.kill()
        proc.join()
    if status != "ok":
        pytest.fail(value)
    return value


def failing(table: features.FeatureTable) -> dict[str, list[int]]:
    """{check: [lines that failed it]}."""
    cols = table.columns
    return {k: [cols["line"][i] for i, ok in enumerate(v) if not ok]
            for k, v in cols.items() if k not in ("line", "token_count") and not all(v)}


def chat_ref(path: Path) -> DatasetRef:
    return DatasetRef(path, "chat_template", "train", {"path": str(path), "type": "chat_template"})


def write_jsonl(path: Path, rows: list[Any]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


# A field of address characters, dots and `@` without a valid address: the shape that made
# the old e-mail pattern quadratic. A real address at its end must still be found.
AT_FIELD = ("a." * 999 + "@") * 500 + " write to ops@example.com"


def test_a_1mb_field_of_at_signs_and_dots_is_scanned_in_linear_time(tmp_path: Path,
                                                                    tokenizer: Any) -> None:
    assert len(AT_FIELD) > 999_000
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [chat("hi", "hello"), chat(AT_FIELD, "ok"), chat("bye", "goodbye")])

    def run() -> tuple[dict[str, list[int]], dict[int, list[str]], set[str]]:
        table = extract(stream_lines(path), CHAT, tokenizer, DataChecks(), None)
        return failing(table), table.pii, pii_kinds(AT_FIELD)

    failed, pii, kinds = guarded(run)
    assert failed == {"no_pii": [2]} and pii == {2: ["email"]} and kinds == {"email"}


def huge_line_file(path: Path, size: int) -> None:
    """Lines 1, 2 and 4 fine; line 3 one valid JSON row of exactly `size` bytes."""
    head = b'{"messages": [{"role": "user", "content": "'
    tail = b'"}, {"role": "assistant", "content": "ok"}]}'
    fill = size - len(head) - len(tail)
    with open(path, "wb") as fh:
        for q in ("one", "two"):
            fh.write(json.dumps(chat(q, "fine")).encode() + b"\n")
        fh.write(head)
        block = b"x" * MiB
        for _ in range(fill // MiB):
            fh.write(block)
        fh.write(b"x" * (fill % MiB) + tail + b"\n")
        fh.write(json.dumps(chat("four", "fine")).encode() + b"\n")


def test_a_200mb_line_fails_on_its_line_in_bounded_memory(tmp_path: Path,
                                                         tokenizer: Any) -> None:
    size = 200 * MiB
    path = tmp_path / "big.jsonl"
    huge_line_file(path, size)
    checks = DataChecks()

    def run() -> dict[str, Any]:
        tracemalloc.start()
        serial = extract(stream_lines(path, checks.max_line_bytes), CHAT, tokenizer, checks,
                         None)
        serial_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        # The parallel pass's parent cuts the file and its workers read their chunks.
        chunks = [n for bounds in features._chunk_bounds(path, 4)
                  for n, _ in features._lines_in(path, *bounds, checks.max_line_bytes)]
        chunks_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        parallel = extract_file(path, CHAT, tokenizer, checks, None, workers=2)
        return {"serial": failing(serial), "unreadable": serial.unreadable,
                "serial_peak": serial_peak, "chunks": chunks, "chunks_peak": chunks_peak,
                "parallel": failing(parallel), "parallel_unreadable": parallel.unreadable}

    try:
        got = guarded(run)
    finally:
        path.unlink()  # pytest keeps recent temporary folders; not this file
    reason = (f"{size} bytes exceeds max_line_bytes {checks.max_line_bytes}; split the row "
              "or raise data.max_line_bytes")
    assert got["serial"] == got["parallel"] == {"parse": [3]}
    assert got["unreadable"] == got["parallel_unreadable"] == {3: reason}
    assert got["chunks"] == [1, 2, 3, 4]
    # Far below the line's 200 MiB: the line is skipped a block at a time, never held.
    assert got["serial_peak"] < 64 * MiB and got["chunks_peak"] < 64 * MiB, got


def test_the_line_limit_is_exact_and_the_reader_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    row = json.dumps(chat("q" * 2000, "a")).encode()
    limit = len(row)
    path.write_bytes(row + b"\n" + row[:-1] + b" }\n" + row)  # limit, limit + 1, limit at EOF
    rows = list(stream_lines(path, limit))
    assert [n for n, _ in rows] == [1, 2, 3] and rows[0][1] == rows[2][1]
    assert rows[1][1] == Unreadable(f"{limit + 1} bytes exceeds max_line_bytes {limit}; split "
                                    "the row or raise data.max_line_bytes")
    ref = chat_ref(path)
    assert len(read_conversations(ref)) == 3  # the stages after the gate read any length
    with pytest.raises(UsageError, match=rf"d.jsonl:2: {limit + 1} bytes exceeds"):
        list(iter_conversations(ref, limit))


DEEP = "[" * 100_000 + "]" * 100_000


def test_100000_nested_brackets_fail_parse_on_their_line(tmp_path: Path,
                                                        tokenizer: Any) -> None:
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [chat("hi", "hello"), DEEP, '{"messages": ' + DEEP + "}",
                       chat("bye", "goodbye")])
    json_path = tmp_path / "d.json"
    json_path.write_text(f'[{json.dumps(chat("hi", "hello"))}, {DEEP}]')

    def run() -> tuple[dict[str, list[int]], dict[int, str], list[tuple[int, Any]]]:
        table = extract(stream_lines(path), CHAT, tokenizer, DataChecks(), None)
        return failing(table), table.unreadable, list(stream_json_array(json_path))

    failed, unreadable, array_rows = guarded(run)
    assert failed == {"parse": [2, 3]} and sorted(unreadable) == [2, 3]
    assert "nested too deeply" in unreadable[2]
    assert array_rows == [(1, chat("hi", "hello")), (2, features.TOO_DEEP)]
    ref = chat_ref(path)
    with pytest.raises(UsageError, match=r"d.jsonl:2: nested too deeply to parse"):
        read_conversations(ref)


def test_a_row_holding_the_separator_is_counted_alone(tokenizer: Any) -> None:
    # Past the probe (the first 32 rows), so the chunk is rendered in bulk.
    rows = [chat(f"question {i}?", f"answer {i}.") for i in range(40)]
    rows += [chat(f"before{Renderer.SEP}after", "ok"),
             chat(f"{Renderer.SEP}{Renderer.SEP}", f"x{Renderer.SEP}"),
             chat("the row after", "is counted as itself")]
    table = extract(iter(enumerate(rows, start=1)), CHAT, tokenizer, DataChecks(), None)
    count = hf_counter(tokenizer)
    want = count([tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows])
    assert table.columns["token_count"] == want
    assert failing(table) == {}


def test_bulk_rendering_is_used_when_no_row_holds_the_separator(tokenizer: Any) -> None:
    renderer = Renderer(tokenizer, CHAT)
    convs = [chat(f"q{i}", f"a{i}")["messages"] for i in range(40)]
    assert renderer.render(convs) == [renderer._one(c) for c in convs]
    assert renderer.bulk is not None
    with pytest.raises(ValueError, match="separator"):
        renderer._bulk_render(renderer.bulk, [chat(Renderer.SEP, "x")["messages"]])


@pytest.mark.parametrize("value", [
    [chat("hi", "hello"), {"messages": []}, 12345678, -0.5e10, "text", None, True, [[1, [2]]]],
    [], {"messages": [{"role": "user", "content": "x" * 50}]}, 7,
])
def test_a_json_array_streams_as_json_loads_reads_it(tmp_path: Path, value: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "BLOCK", 5)  # elements and numbers cut at every boundary
    path = tmp_path / "d.json"
    for text in (json.dumps(value), json.dumps(value, indent=3), "\ufeff" + json.dumps(value)):
        path.write_text(text + "\n", encoding="utf-8")
        want = list(enumerate(value if isinstance(value, list) else [value], start=1))
        assert list(stream_json_array(path)) == want


@pytest.mark.parametrize("text,want", [
    ("", [(1, None)]), ("[1, 2", [(1, 1), (2, 2), (3, None)]), ("[1 2]", [(1, 1), (2, None)]),
    ("[1,]", [(1, 1), (2, None)]), ("[1] x", [(1, 1), (2, None)]), ('{"a": 1} x', [(1, None)]),
])
def test_a_broken_json_array_fails_the_row_where_it_breaks(tmp_path: Path, text: str,
                                                           want: list[Any]) -> None:
    path = tmp_path / "d.json"
    path.write_text(text)
    assert list(stream_json_array(path)) == want


def test_a_json_array_element_over_the_limit_fails_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    with open(path, "w") as fh:
        fh.write(f'[{json.dumps(chat("hi", "hello"))}, {{"messages": "')
        for _ in range(32):
            fh.write("x" * MiB)
        fh.write('"}]')
    tracemalloc.start()
    rows = list(stream_json_array(path, MiB))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [n for n, _ in rows] == [1, 2] and isinstance(rows[1][1], Unreadable)
    assert "max_line_bytes 1048576" in rows[1][1].reason
    assert peak < 16 * MiB
