from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The tiny model's real BPE tokenizer with its ChatML template (built in ~1 s)."""
    from llmops.models.base import build_tiny_tokenizer

    return build_tiny_tokenizer()
