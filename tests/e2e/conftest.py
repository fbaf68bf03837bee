"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_base(shared_home: Path) -> Path:
    """Build the tiny base model once per session; tests copy it into their own home."""
    from llmops.models.base import build_tiny_llama

    out = shared_home / "models" / "tiny-llama"
    if not (out / "config.json").is_file():
        old = os.environ.get("LLMOPS_ROOT")
        os.environ["LLMOPS_ROOT"] = str(REPO)
        try:
            build_tiny_llama(out)
        finally:
            os.environ.pop("LLMOPS_ROOT") if old is None else os.environ.update(LLMOPS_ROOT=old)
    return out
