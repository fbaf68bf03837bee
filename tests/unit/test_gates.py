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


def _verdicts(**roles: list[bool]) -> dict[str, dict[str, dict[str, bool]]]:
    """role -> golden_accuracy -> question -> right, on the questions q0, q1, ..."""
    return {role: {"golden_accuracy": {f"q{i}": v for i, v in enumerate(right)}}
            for role, right in roles.items()}


def test_production_lower_bound_passes_a_clear_gain_and_fails_one_within_noise() -> None:
    rules = [rule(metric="golden_accuracy", min_gain_over_production_lower_bound=0.0)]
    # 20 questions: the candidate gets all right, production none: 95% CI 0.772 to 1.
    clear = _verdicts(candidate=[True] * 20, production=[False] * 20)
    ok = gate_decision(rules, {"golden_accuracy": 1.0}, base={},
                       production={"golden_accuracy": 0.0}, verdicts=clear)
    assert ok.passed and "lower bound +0.7721 >= 0" in ok.results[0].reason
    # 10 questions, 3 won and 1 lost: +0.2, but the interval (-0.187 to +0.521) contains 0.
    noisy = _verdicts(candidate=[True] * 8 + [False] * 2,
                      production=[True] * 5 + [False] * 3 + [True, False])
    bad = gate_decision(rules, {"golden_accuracy": 0.8}, base={},
                        production={"golden_accuracy": 0.6}, verdicts=noisy)
    assert not bad.passed
    assert "within noise" in bad.results[0].reason and "10 paired" in bad.results[0].reason


def test_a_lower_bound_rule_without_verdicts_fails_closed() -> None:
    rules = [rule(metric="golden_accuracy", min_gain_over_production_lower_bound=-1.0)]
    m = {"golden_accuracy": 1.0}
    for verdicts in (None, _verdicts(candidate=[True]), _verdicts(production=[True])):
        decision = gate_decision(rules, m, base={}, production=m, verdicts=verdicts)
        assert not decision.passed and "fails closed" in decision.results[0].reason
    # questions that do not pair up (different keys) are no paired data either
    apart = {"candidate": {"golden_accuracy": {"a": True}},
             "production": {"golden_accuracy": {"b": True}}}
    assert not gate_decision(rules, m, base={}, production=m, verdicts=apart).passed


def test_no_production_version_skips_the_production_lower_bound() -> None:
    rules = [rule(metric="golden_accuracy", min_gain_over_production_lower_bound=0.1)]
    decision = gate_decision(rules, {"golden_accuracy": 0.1}, base={}, production=None)
    assert decision.passed and "no production version" in decision.results[0].reason


def test_base_lower_bound_uses_the_paired_interval() -> None:
    verdicts = _verdicts(candidate=[True] * 20, base=[False] * 20)
    m, b = {"golden_accuracy": 1.0}, {"golden_accuracy": 0.0}
    passes = [rule(metric="golden_accuracy", min_gain_over_base_lower_bound=0.7)]
    fails = [rule(metric="golden_accuracy", min_gain_over_base_lower_bound=0.8)]
    assert gate_decision(passes, m, base=b, production=None, verdicts=verdicts).passed
    assert not gate_decision(fails, m, base=b, production=None, verdicts=verdicts).passed
    assert not gate_decision(passes, m, base=b, production=None).passed  # no verdicts


def test_relative_rules_say_when_their_difference_is_within_noise() -> None:
    rules = [rule(metric="golden_accuracy", max_regression_vs_production=0.05)]
    verdicts = _verdicts(candidate=[True, True, False, False], production=[True, False, True,
                                                                          False])
    m = {"golden_accuracy": 0.5}
    decision = gate_decision(rules, m, base={}, production=m, verdicts=verdicts)
    assert decision.passed  # the point-estimate rule decides as before
    assert "4 paired questions" in decision.results[0].reason
    assert "within noise" in decision.results[0].reason


@pytest.mark.parametrize("kw", [{"metric": "eval_loss", "min_gain_over_base_lower_bound": 0.0},
                                {"metric": "golden.golden.rouge_l",
                                 "min_gain_over_production_lower_bound": -0.05}])
def test_lower_bounds_apply_to_accuracies_only(kw: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="per-question verdicts"):
        GateRule.model_validate(kw)
    assert rule(metric="golden.golden.accuracy", min_gain_over_base_lower_bound=0.0)


def test_support_bot_gate_keeps_its_point_estimate_thresholds() -> None:
    from llmops.config import load_model

    gates = load_model("support-bot").validation.gates
    assert all(g.min_gain_over_base_lower_bound is None
               and g.min_gain_over_production_lower_bound is None for g in gates)
    assert [(g.metric, g.min, g.max, g.min_gain_over_base, g.max_regression_vs_production)
            for g in gates if not g.metric.startswith(("probe.", "lmeval."))  # the suites
            and g.metric != "retention_kept"] == [  # of issue #22 apart
        ("golden_accuracy", 0.5, None, None, None), ("golden_accuracy", None, None, 0.3, None),
        ("eval_loss", None, None, 0.0, None), ("golden_accuracy", None, None, None, 0.05),
        ("format_empty_rate", None, 0.0, None, None),
        ("format_template_leak_rate", None, 0.0, None, None)]
