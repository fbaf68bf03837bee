"""The data gate: LLM-specific checks on every dataset, before any compute is spent."""

from llmops.data.gate import CheckResult, DataReport, DatasetReport, validate_model_data

__all__ = ["CheckResult", "DataReport", "DatasetReport", "validate_model_data"]
