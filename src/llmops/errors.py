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


class DataRefused(CheckFailed):
    """The data gate refused a model's data; `report` holds every check for the table."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class GateRefused(CheckFailed):
    """The release gate refused the candidate; `report_path` is its gate report (Markdown)."""

    def __init__(self, message: str, report_path: object) -> None:
        super().__init__(message)
        self.report_path = report_path
