"""One dataset reader for every stage: rows as conversations, read as Axolotl reads them.

The dataset's Axolotl entry (`DatasetRef.entry`) says where the messages, roles and
content are (`llmops.config.datasets`); a row that cannot be read is a UsageError naming
the file and line, never a KeyError. The data gate checks the same rows in bulk
(`llmops.data.features`); the stages after it read them here.
"""

from __future__ import annotations

from collections.abc import Iterator

from llmops.config import DatasetRef
from llmops.config.datasets import Format, format_of
from llmops.data.features import Unreadable, stream_json_array, stream_lines
from llmops.data.formats import to_messages
from llmops.errors import UsageError

Conversation = list[dict[str, str]]


def iter_conversations(ref: DatasetRef, max_line_bytes: int | None = None
                       ) -> Iterator[tuple[int, Conversation]]:
    """(line, [{'role', 'content'}]) per row of a .jsonl (or .json array) dataset; roles
    mapped to user/assistant/system (a `completion` row is one 'text' turn).

    Lines of any length are read unless `max_line_bytes` is given: the data gate refuses
    longer lines than its configured limit before any stage reads the rows, and a smaller
    default here would refuse rows that the gate was configured to let through."""
    fmt = format_of(ref.entry, str(ref.path))
    rows = stream_json_array(ref.path, max_line_bytes) if ref.path.suffix == ".json" else \
        stream_lines(ref.path, max_line_bytes)
    for line, obj in rows:
        where = f"{ref.path}:{line}"
        if isinstance(obj, Unreadable):
            raise UsageError(f"{where}: {obj.reason}")
        if not isinstance(obj, dict):
            raise UsageError(f"{where}: not a JSON object")
        msgs = to_messages(obj, fmt)
        if not msgs:
            raise UsageError(f"{where}: no {_fields(fmt)} (a {fmt.type} dataset)")
        for n, m in enumerate(msgs):
            if not (isinstance(m["role"], str) and isinstance(m["content"], str)):
                raise UsageError(f"{where}: {_fields(fmt)}: message {n}: its role and content "
                                 "must be strings" if fmt.type == "chat_template" else
                                 f"{where}: {_fields(fmt)} must be strings")
        yield line, msgs


def read_conversations(ref: DatasetRef) -> list[Conversation]:
    """Every row of the dataset as a conversation (the whole file read and checked)."""
    return [msgs for _, msgs in iter_conversations(ref)]


def _fields(fmt: Format) -> str:
    """What a row of this format must hold, for error messages."""
    if fmt.type == "alpaca":
        return "'instruction' and 'output'"
    if fmt.type == "completion":
        return repr(fmt.text_field)
    return (f"{fmt.field_messages!r} (a list of messages with "
            f"{fmt.role_key!r} and {fmt.content_key!r})")
