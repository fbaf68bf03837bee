"""The release gate: a pure decision over metrics, with a reason for every rule.

It fails closed: a metric that is missing or not a finite number fails its rule, and so
does an interval rule without per-question verdicts to pair. With verdicts, the reasons of
the relative rules also give the paired 95% interval and say when a difference is noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmops.config import GateRule
from llmops.evaluation.uncertainty import Verdicts, paired

Metrics = Mapping[str, float]

# Metrics where smaller is better; every other metric is better when larger. (failures,
# findings: the safety probes' counts, llmops.evaluation.probes.)
_LOWER_IS_BETTER = ("loss", "perplexity", "latency", "error", "format_", "rss", "failures",
                    "findings")


def higher_is_better(metric: str) -> bool:
    """Direction of a metric, from its name (eval_loss: lower; golden_accuracy: higher)."""
    return not any(word in metric for word in _LOWER_IS_BETTER)


@dataclass(frozen=True)
class RuleResult:
    """One rule's verdict and why."""

    metric: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateDecision:
    """The whole gate: it passes only if every rule passed."""

    results: tuple[RuleResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed]


def _finite(metrics: Metrics | None, name: str) -> float | None:
    value = None if metrics is None else metrics.get(name)
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def _gain(metric: str, candidate: float, reference: float) -> float:
    """How much better the candidate is than the reference (negative: worse); a tie is +0,
    never -0, in reasons."""
    gain = candidate - reference if higher_is_better(metric) else reference - candidate
    return gain + 0.0


def _noise_note(verdicts: Verdicts | None, reference: str, metric: str) -> str:
    """' [paired 95% CI … : within noise]' for a relative check, when verdicts pair up."""
    diff = paired(verdicts, "candidate", reference, metric)
    if diff is None:
        return ""
    return (f" [candidate - {reference} on {diff.n} paired questions: 95% CI "
            f"{diff.low:+.3f} to {diff.high:+.3f}{': within noise' if diff.within_noise else ''}]")


def _lower_bound_check(m: str, reference: str, bound: float,
                       verdicts: Verdicts | None) -> tuple[bool, str]:
    diff = paired(verdicts, "candidate", reference, m)
    if diff is None:
        return False, (f"{m}: no per-question verdicts of candidate and {reference} to pair "
                       "(fails closed)")
    noise = ", within noise" if diff.within_noise else ""
    return (diff.low >= bound,
            f"{m}: candidate - {reference} {diff.estimate:+.3f} on {diff.n} paired questions "
            f"(95% CI {diff.low:+.3f} to {diff.high:+.3f}{noise}), lower bound "
            f"{diff.low:+.4g} >= {bound:g}")


def evaluate_rule(
    rule: GateRule, candidate: Metrics, base: Metrics, production: Metrics | None,
    verdicts: Verdicts | None = None,
) -> RuleResult:
    """Check every condition of one rule; the reason lists each check with its figures.
    `verdicts` (role -> metric -> question -> right) pair the roles question by question."""
    m = rule.metric
    value = _finite(candidate, m)
    if value is None:
        return RuleResult(m, False, f"{m}: candidate value missing or not finite (fails closed)")
    checks: list[tuple[bool, str]] = []
    if rule.min is not None:
        checks.append((value >= rule.min, f"{m}={value:.4g} >= min {rule.min:g}"))
    if rule.max is not None:
        checks.append((value <= rule.max, f"{m}={value:.4g} <= max {rule.max:g}"))
    if rule.min_gain_over_base is not None:
        ref = _finite(base, m)
        if ref is None:
            checks.append((False, f"{m}: base value missing or not finite (fails closed)"))
        else:
            gain = _gain(m, value, ref)
            checks.append(
                (gain >= rule.min_gain_over_base,
                 f"{m}: gain over base {gain:+.4g} (base {ref:.4g}) >= {rule.min_gain_over_base:g}"
                 + _noise_note(verdicts, "base", m))
            )
    if rule.max_regression_vs_production is not None:
        if production is None:
            checks.append((True, f"{m}: no production version yet, regression rule skipped"))
        else:
            ref = _finite(production, m)
            if ref is None:
                checks.append(
                    (False, f"{m}: production value missing or not finite (fails closed)"))
            else:
                regression = -_gain(m, value, ref) + 0.0
                limit = rule.max_regression_vs_production
                checks.append(
                    (regression <= limit,
                     f"{m}: regression vs production {regression:+.4g} (production {ref:.4g}) "
                     f"<= {limit:g}" + _noise_note(verdicts, "production", m))
                )
    if rule.min_gain_over_base_lower_bound is not None:
        checks.append(_lower_bound_check(m, "base", rule.min_gain_over_base_lower_bound,
                                         verdicts))
    if rule.min_gain_over_production_lower_bound is not None:
        if production is None:
            checks.append((True, f"{m}: no production version yet, interval rule skipped"))
        else:
            checks.append(_lower_bound_check(
                m, "production", rule.min_gain_over_production_lower_bound, verdicts))
    passed = all(ok for ok, _ in checks)
    reason = "; ".join(("ok: " if ok else "FAILED: ") + text for ok, text in checks)
    return RuleResult(m, passed, reason)


def gate_decision(
    rules: Sequence[GateRule],
    candidate: Metrics,
    base: Metrics,
    production: Metrics | None,
    verdicts: Verdicts | None = None,
) -> GateDecision:
    """Decide whether a candidate may be registered. `production` is None before the first;
    `verdicts` (uncertainty.question_verdicts) are needed by the interval rules."""
    return GateDecision(tuple(evaluate_rule(r, candidate, base, production, verdicts)
                              for r in rules))
