"""Errors that carry the exit code the CLI (and so CI) acts on."""

from __future__ import annotations


class LlmopsError(Exception):
    """Base error: its message is shown to the user as is, and `exit_code` is returned."""

    exit_code = 1


class UsageError(LlmopsError):
    """Bad input: an unknown model, a missing file, a malformed YAML key (exit 2)."""

    exit_code = 2


class CheckFailed(LlmopsError):
    """The data or the candidate failed a check or gate (exit 1): nothing was registered."""

    exit_code = 1


class StageFailed(LlmopsError):
    """A stage could not do its work (training crashed, a server never became healthy)."""

    exit_code = 1
