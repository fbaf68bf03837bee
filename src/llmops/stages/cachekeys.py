"""Content keys for work that is waste to repeat: the same inputs give the same result.

The data gate's result depends on the dataset and golden files, the model's Axolotl YAML
and validation rules, its tokenizer and chat template, and the checks' own code. The key
hashes all of them by content (not by path or time), so an edit to any one of them, even
a revert, is a new key, and an unchanged re-run is a cache hit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from llmops.config import ModelSpec
from llmops.digests import sha256_file
from llmops.models.base import ensure_base_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "special_tokens_map.json")


def data_gate_inputs(spec: ModelSpec) -> list[Path]:
    """Every file the data gate's verdict depends on."""
    package = Path(__file__).resolve().parent.parent  # llmops/
    base = Path(ensure_base_model(spec.base_model))
    return [
        *spec.source_files(),
        *(base / name for name in TOKENIZER_FILES if (base / name).is_file()),
        *sorted((package / "data").glob("*.py")),
        *sorted((package / "config").glob("*.py")),
    ]


def data_gate_key(spec: ModelSpec) -> str:
    digest = hashlib.sha256(f"data-gate:{spec.name}".encode())
    for path in data_gate_inputs(spec):
        digest.update(f"\n{path.name}:{sha256_file(path)}".encode())
    return digest.hexdigest()
