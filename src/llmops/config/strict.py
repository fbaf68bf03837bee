"""The base of every model of the operator's files (its own module, so that the topic
modules of `llmops.config` share it without importing each other)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")
