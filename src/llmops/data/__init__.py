"""The data gate: LLM-specific checks on every dataset, before any compute is spent."""

from llmops.data.gate import validate_model_data
from llmops.data.report import CheckResult, DataReport, DatasetReport

__all__ = ["CheckResult", "DataReport", "DatasetReport", "validate_model_data"]
