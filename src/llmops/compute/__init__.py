"""This machine's compute: its capabilities, measured matmul speeds and the plan decided from
them (training dtype, served dtype and artefact, vLLM's CPU settings), and the serving
settings of a model under that plan."""

from __future__ import annotations

from llmops.compute.plan import ComputePlan, decide, machine_plan
from llmops.compute.serving import serve_settings, train_precision

__all__ = ["ComputePlan", "decide", "machine_plan", "serve_settings", "train_precision"]
