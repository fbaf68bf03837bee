"""The release gate: a pure decision with a reason for every rule, failing closed."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from llmops.config import GateRule
from llmops.evaluation.gates import gate_decision


def rule(**kw: object) -> GateRule:
    return GateRule.model_validate(kw)


def test_absolute_minimum_passes_and_fails_with_reasons() -> None:
    rules = [rule(metric="golden_accuracy", min=0.8)]
    ok = gate_decision(rules, {"golden_accuracy": 0.85}, base={}, production=None)
    bad = gate_decision(rules, {"golden_accuracy": 0.5}, base={}, production=None)
    assert ok.passed and not bad.passed
    assert "0.5" in bad.results[0].reason and "0.8" in bad.results[0].reason


def test_tie_on_an_absolute_threshold_passes() -> None:
    decision = gate_decision([rule(metric="golden_accuracy", min=0.8)], {"golden_accuracy": 0.8},
                             base={}, production=None)
    assert decision.passed


def test_lower_is_better_for_losses() -> None:
    rules = [rule(metric="eval_loss", min_gain_over_base=0.1)]
    assert gate_decision(rules, {"eval_loss": 1.0}, base={"eval_loss": 1.5}, production=None).passed
    assert not gate_decision(rules, {"eval_loss": 1.45}, base={"eval_loss": 1.5},
                             production=None).passed


def test_gain_over_base_tie_with_zero_margin_passes_but_positive_margin_fails() -> None:
    m = {"golden_accuracy": 0.5}
    assert gate_decision([rule(metric="golden_accuracy", min_gain_over_base=0.0)], m, base=m,
                         production=None).passed
    assert not gate_decision([rule(metric="golden_accuracy", min_gain_over_base=0.01)], m, base=m,
                             production=None).passed


def test_no_production_version_skips_the_regression_rule_and_says_so() -> None:
    decision = gate_decision([rule(metric="golden_accuracy", max_regression_vs_production=0.05)],
                             {"golden_accuracy": 0.1}, base={}, production=None)
    assert decision.passed
    assert "no production version" in decision.results[0].reason


def test_regression_against_production() -> None:
    rules = [rule(metric="golden_accuracy", max_regression_vs_production=0.05)]
    prod = {"golden_accuracy": 0.9}
    assert gate_decision(rules, {"golden_accuracy": 0.86}, base={}, production=prod).passed
    assert not gate_decision(rules, {"golden_accuracy": 0.8}, base={}, production=prod).passed


@pytest.mark.parametrize("value", [math.nan, math.inf, None])
def test_nan_or_missing_candidate_metric_fails_closed(value: float | None) -> None:
    candidate = {} if value is None else {"golden_accuracy": value}
    decision = gate_decision([rule(metric="golden_accuracy", min=0.0)], candidate, base={},
                             production=None)
    assert not decision.passed
    assert "golden_accuracy" in decision.results[0].reason


def test_missing_base_metric_fails_closed_for_a_relative_rule() -> None:
    decision = gate_decision([rule(metric="eval_loss", min_gain_over_base=0.0)],
                             {"eval_loss": 1.0}, base={}, production=None)
    assert not decision.passed and "base" in decision.results[0].reason


def test_every_rule_is_reported_even_after_a_failure() -> None:
    rules = [rule(metric="golden_accuracy", min=0.9), rule(metric="eval_loss", max=2.0)]
    decision = gate_decision(rules, {"golden_accuracy": 0.1, "eval_loss": 1.0}, base={},
                             production=None)
    assert [r.passed for r in decision.results] == [False, True]
    assert decision.failures() == [decision.results[0]]


def test_a_rule_without_a_condition_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="a gate rule needs"):
        GateRule.model_validate({"metric": "eval_loss"})


@pytest.mark.parametrize("metric,higher", [
    ("golden_accuracy", True), ("golden.golden.rouge_l", True), ("eval_loss", False),
    ("eval_perplexity", False), ("latency_p95_s", False), ("format_empty_rate", False),
    ("server_rss_mb", False)])
def test_metric_direction(metric: str, higher: bool) -> None:
    from llmops.evaluation.gates import higher_is_better

    assert higher_is_better(metric) is higher


def test_a_tie_with_production_reads_as_plus_zero() -> None:
    rules = [rule(metric="eval_loss", max_regression_vs_production=0.0)]
    decision = gate_decision(rules, {"eval_loss": 3.0}, base={}, production={"eval_loss": 3.0})
    assert decision.passed and "regression vs production +0 " in decision.results[0].reason
