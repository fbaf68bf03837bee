"""Per-question verdicts of the golden answers, and the intervals the gate and its report use.

Every golden question is asked of every role (base, candidate, production); a verdict is
whether one role answered one question right. Keyed by the question, the verdicts of two
roles pair up, so their accuracies can be compared question by question (`stats`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from llmops.evaluation.stats import PairedDifference, Proportion, paired_difference, proportion

# role -> metric (golden_accuracy, golden.<set>.accuracy) -> question key -> answered right
Verdicts = Mapping[str, Mapping[str, Mapping[str, bool]]]

# The differences reported: candidate against each reference role (and against its own
# adapter, when it is served as merged or int8 weights: what merging or quantizing changed).
COMPARISONS = (("candidate", "production"), ("candidate", "base"),
               ("candidate", "candidate_adapter"))


def question_verdicts(
        answers: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, bool]]]:
    """The verdicts behind `golden_accuracy` and each `golden.<set>.accuracy`, per role,
    from the golden answers (evalserve.Answer as dicts). A question's key is its set and its
    text, with '#2', '#3' … on a repeated question, so each role's keys are the same."""
    out: dict[str, dict[str, dict[str, bool]]] = {}
    seen: dict[str, Counter[tuple[str, str]]] = {}
    for a in answers:
        role, golden_set, question = str(a["role"]), str(a["golden_set"]), str(a["question"])
        counts = seen.setdefault(role, Counter())
        counts[(golden_set, question)] += 1
        occurrence = counts[(golden_set, question)]
        key = f"{golden_set}: {question}" + (f" #{occurrence}" if occurrence > 1 else "")
        metrics = out.setdefault(role, {})
        correct = bool(a["correct"])
        metrics.setdefault("golden_accuracy", {})[key] = correct
        metrics.setdefault(f"golden.{golden_set}.accuracy", {})[key] = correct
    return out


def accuracy(verdicts: Verdicts | None, role: str, metric: str) -> Proportion | None:
    """A role's accuracy on a metric with its Wilson interval; None without verdicts."""
    mine = (verdicts or {}).get(role, {}).get(metric)
    if not mine:
        return None
    return proportion(sum(mine.values()), len(mine))


def paired(verdicts: Verdicts | None, first: str, second: str,
           metric: str) -> PairedDifference | None:
    """first − second on the questions both answered, with Newcombe's paired interval;
    None when either role has no verdicts for the metric or no question is shared."""
    one = (verdicts or {}).get(first, {}).get(metric) or {}
    two = (verdicts or {}).get(second, {}).get(metric) or {}
    shared = [k for k in one if k in two]
    if not shared:
        return None
    return paired_difference([one[k] for k in shared], [two[k] for k in shared])


@dataclass(frozen=True)
class Uncertainty:
    """Every accuracy with its interval, and the paired differences of the candidate.

    accuracy: role -> metric -> Proportion; differences: 'candidate-production' and
    'candidate-base' -> metric -> PairedDifference (only when both roles were evaluated)."""

    accuracy: dict[str, dict[str, Proportion]] = field(default_factory=dict)
    differences: dict[str, dict[str, PairedDifference]] = field(default_factory=dict)

    def metrics(self) -> dict[str, dict[str, float]]:
        """The 95% intervals of golden_accuracy as metrics, per role:
        `golden_accuracy_ci_low`/`_ci_high`, and for the candidate
        `golden_accuracy_vs_<reference>_ci_low`/`_ci_high` (paired differences)."""
        out: dict[str, dict[str, float]] = {}
        for role, shares in self.accuracy.items():
            if (share := shares.get("golden_accuracy")) is not None:
                out.setdefault(role, {}).update(
                    {"golden_accuracy_ci_low": share.low, "golden_accuracy_ci_high": share.high})
        for pair, diffs in self.differences.items():
            first, reference = pair.split("-", 1)
            if (diff := diffs.get("golden_accuracy")) is not None:
                out.setdefault(first, {}).update(
                    {f"golden_accuracy_vs_{reference}_ci_low": diff.low,
                     f"golden_accuracy_vs_{reference}_ci_high": diff.high})
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "Wilson score intervals; differences on paired questions with "
                      "Newcombe's (1998) paired score interval; 95%",
            "accuracy": {role: {m: {**asdict(p), "value": p.value} for m, p in metrics.items()}
                         for role, metrics in self.accuracy.items()},
            "differences": {
                pair: {m: {**asdict(d), "n": d.n, "estimate": d.estimate,
                           "within_noise": d.within_noise} for m, d in metrics.items()}
                for pair, metrics in self.differences.items()},
        }


def _order(metric: str) -> tuple[bool, str]:
    return metric != "golden_accuracy", metric  # the overall accuracy first


def summarize(verdicts: Verdicts) -> Uncertainty:
    """The accuracies and differences of `verdicts`, in role and metric order."""
    acc = {role: {m: p for m in sorted(metrics, key=_order)
                  if (p := accuracy(verdicts, role, m))}
           for role, metrics in verdicts.items()}
    diffs: dict[str, dict[str, PairedDifference]] = {}
    for first, second in COMPARISONS:
        if first in verdicts and second in verdicts:
            pairs = {m: d for m in sorted(verdicts[first], key=_order)
                     if (d := paired(verdicts, first, second, m)) is not None}
            if pairs:
                diffs[f"{first}-{second}"] = pairs
    return Uncertainty(acc, diffs)
