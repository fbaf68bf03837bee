"""Dataset formats as Axolotl reads them, normalised to one shape for checking.

- `chat_template`: a list of messages under `field_messages` (default `messages`), with
  the role and content keys of `message_property_mappings` (ShareGPT: `from`/`value`) and
  role names mapped through `roles` (ShareGPT: human → user, gpt → assistant);
- `alpaca`: instruction / input / output, as one user turn and one assistant turn;
- `completion`: raw text under `field` (default `text`), no roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmops.errors import UsageError

SUPPORTED = ("chat_template", "alpaca", "completion")
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


def format_of(entry: dict[str, Any], where: str) -> Format:
    """The Format of an Axolotl dataset entry; UsageError for a type we cannot check."""
    kind = str(entry.get("type", ""))
    if kind not in SUPPORTED:
        raise UsageError(f"{where}: type: {kind!r} is not checked by the data gate; "
                         f"supported: {', '.join(SUPPORTED)}")
    mapping = entry.get("message_property_mappings") or {}
    role_key = mapping.get("role") or entry.get("message_field_role") or "role"
    content_key = mapping.get("content") or entry.get("message_field_content") or "content"
    role_map: dict[str, str] = {}
    if role_key == "from":  # ShareGPT-style: Axolotl's default mapping of its role names
        role_map.update(SHAREGPT_ROLES)
    for ours, theirs in (entry.get("roles") or {}).items():
        for name in theirs if isinstance(theirs, list) else [theirs]:
            role_map[str(name)] = str(ours)
    return Format(kind, str(entry.get("field_messages") or "messages"), role_key, content_key,
                  role_map, str(entry.get("field") or "text"))


def to_messages(obj: dict[str, Any], fmt: Format) -> list[dict[str, Any]] | None:
    """The row as [{'role', 'content'}]; None when its required field is missing/malformed.

    Content is passed through as found (possibly not a string) for the schema checks.
    """
    if fmt.type == "alpaca":
        if "instruction" not in obj or "output" not in obj:
            return None
        prompt = obj["instruction"]
        extra = obj.get("input")
        if isinstance(prompt, str) and isinstance(extra, str) and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        return [{"role": "user", "content": prompt},
                {"role": "assistant", "content": obj["output"]}]
    if fmt.type == "completion":
        return None if fmt.text_field not in obj else [
            {"role": "text", "content": obj[fmt.text_field]}]
    raw = obj.get(fmt.field_messages)
    if not (isinstance(raw, list) and raw and all(isinstance(m, dict) for m in raw)):
        return None
    return [{"role": fmt.role_map.get(str(m.get(fmt.role_key)), m.get(fmt.role_key)),
             "content": m.get(fmt.content_key)} for m in raw]
