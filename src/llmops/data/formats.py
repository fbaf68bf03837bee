"""Rows of a dataset, normalised to one shape for checking: [{'role', 'content'}].

Which keys hold the fields (`Format`, `format_of`) is read from the dataset's Axolotl entry
in the config layer (`llmops.config.datasets`), so that loading a model refuses an entry
before any compute; this module applies it to a row.
"""

from __future__ import annotations

from typing import Any

from llmops.config.datasets import SHAREGPT_ROLES, SUPPORTED, Format, format_of

__all__ = ["SHAREGPT_ROLES", "SUPPORTED", "Format", "format_of", "to_messages"]


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
