"""Dataset formats as Axolotl reads them: which keys of a dataset entry name the fields.

Pure (no I/O), so that loading a model refuses an entry no stage could read, before any
compute; `llmops.data.reader` reads the rows with it.

- `chat_template`: a list of messages under `field_messages` (default `messages`), with
  the role and content keys of `message_property_mappings` (ShareGPT: `from`/`value`) and
  role names mapped through `roles` (by default Axolotl's: human → user, gpt → assistant);
- `alpaca`: instruction / input / output, as one user turn and one assistant turn;
- `completion`: raw text under `field` (default `text`), no roles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmops.errors import UsageError

SUPPORTED = ("chat_template", "alpaca", "completion")
# Axolotl's role names when an entry gives no `roles` (an entry's `roles` replace them all).
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user",
                  "assistant": "assistant", "tool": "tool"}


@dataclass(frozen=True)
class Format:
    """How to read one dataset's rows (from its entry in the Axolotl YAML)."""

    type: str
    field_messages: str = "messages"
    role_key: str = "role"
    content_key: str = "content"
    role_map: dict[str, str] = field(default_factory=dict)
    text_field: str = "text"


def format_of(entry: dict[str, Any], where: str | Callable[[str], str]) -> Format:
    """The Format of an Axolotl dataset entry; UsageError naming the key Axolotl would
    misread. `where` prefixes messages: a string, or key -> "file:line: key" (config check)."""
    at = where if callable(where) else (lambda key: f"{where}: {key}")
    kind = str(entry.get("type", ""))
    if kind not in SUPPORTED:
        raise UsageError(f"{at('type')}: {kind!r} is not checked by the data gate nor read "
                         f"by evaluation; supported: {', '.join(SUPPORTED)}")
    names: dict[str, str | None] = {}
    for key in ("field_messages", "field", "message_field_role", "message_field_content"):
        value = entry.get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise UsageError(f"{at(key)}: must be a field name (a non-empty string)")
        names[key] = value
    mapping = entry.get("message_property_mappings") or {}
    if not (isinstance(mapping, dict)
            and all(isinstance(v, str) and v for v in mapping.values())):
        raise UsageError(f"{at('message_property_mappings')}: must map properties to field "
                         "names, e.g. {role: from, content: value}")
    roles = entry.get("roles") or {}
    if not (isinstance(roles, dict) and all(
            isinstance(v, list) and v and all(isinstance(n, str) for n in v)
            for v in roles.values())):
        raise UsageError(f"{at('roles')}: must map each role to a list of the names it has "
                         "in the data, e.g. {user: [human], assistant: [gpt]}")
    role_map = ({str(name): str(ours) for ours, theirs in roles.items() for name in theirs}
                if roles else dict(SHAREGPT_ROLES))
    return Format(kind, names["field_messages"] or "messages",
                  mapping.get("role") or names["message_field_role"] or "role",
                  mapping.get("content") or names["message_field_content"] or "content",
                  role_map, names["field"] or "text")
