"""The gate stage pairs the golden answers' verdicts for the gate and its report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmops.config import GateRule, load_model
from llmops.errors import GateRefused
from llmops.evaluation.evaluate import EvalReport
from llmops.stages import evaluation
from llmops.stages.runs import Run


class _Client:
    def __init__(self) -> None:
        self.tags: dict[str, str] = {}

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.tags[key] = value

    def log_artifact(self, *args: Any) -> None:
        pass


def _report(candidate_right: int) -> EvalReport:
    answers = [{"role": role, "golden_set": "golden", "question": f"q{i}",
                "correct": i < (candidate_right if role == "candidate" else 1)}
               for role in ("base", "candidate") for i in range(28)]
    fmt = {"format_empty_rate": 0.0, "format_template_leak_rate": 0.0}
    fmt.update({f"probe.{m}": 0.0 for m in (  # the safety probes: none failed
        "regurgitation_failures", "pii_findings", "secret_findings", "injection_failures",
        "refusal_failures")})
    fmt["retention_kept"] = 1.0  # the retention set: every item kept
    fmt["lmeval.kept_arithmetic.exact_match"] = 0.3  # the lm-eval task
    return EvalReport({"base": {"golden_accuracy": 1 / 28, "eval_loss": 3.0, **fmt},
                       "candidate": {"golden_accuracy": candidate_right / 28, "eval_loss": 1.0,
                                     **fmt}}, answers)


@pytest.fixture
def stage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> _Client:
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "state"))
    client = _Client()
    monkeypatch.setattr(evaluation, "mlflow_client", lambda: client)
    return client


def test_the_report_carries_intervals_and_an_interval_rule_reads_the_verdicts(
        stage: _Client) -> None:
    spec = load_model("support-bot")
    run = Run("support-bot", "r1", "")
    evaluation.gate_stage(spec, _report(22), run)
    md = (run.folder / "gate_report.md").read_text()
    assert "0.786 (22/28, 95% CI 0.605–0.898)" in md and "candidate − base: +0.750" in md
    assert stage.tags["gate.passed"] == "true"
    # the same verdicts, with a rule that asks more than their interval shows
    # (22 of 28 against 1 of 28: candidate − base +0.750, 95% CI +0.520 to +0.866)
    rule = GateRule(metric="golden_accuracy", min_gain_over_base_lower_bound=0.6)
    strict = replace(spec, validation=spec.validation.model_copy(
        update={"gates": [*spec.validation.gates, rule]}))
    with pytest.raises(GateRefused, match="lower bound"):
        evaluation.gate_stage(strict, _report(22), run)
