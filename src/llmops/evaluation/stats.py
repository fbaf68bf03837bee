"""Honest uncertainty for golden-set accuracies: pure, deterministic statistics.

* `wilson`: the Wilson score interval of one proportion (Wilson 1927), which, unlike the
  normal-approximation (Wald) interval, stays inside [0, 1] and does not collapse to a point
  at 0/n or n/n.
* `paired_difference`: the difference of two proportions measured on the same questions
  (candidate − reference), with Newcombe's score interval for paired data (Newcombe 1998,
  Statistics in Medicine 17:2635, method 10; the "square-and-add" interval of Fagerland,
  Lydersen & Laake). It combines the two Wilson intervals and the correlation of the pairs,
  so it needs no resampling and gives the same answer every time.
* `within_noise`: whether an interval contains 0, i.e. the data cannot tell the sign.

All intervals are two-sided 95% by default (z = 1.959964, the 97.5% normal quantile).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for `successes` out of `n`:

        centre = (p + z²/2n) / (1 + z²/n),
        half   = z · sqrt(p(1 − p)/n + z²/4n²) / (1 + z²/n),

    returned as (centre − half, centre + half). n = 0 observes nothing: (0, 1), the whole
    range. 0/n has a lower bound of exactly 0 and n/n an upper bound of exactly 1."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"wilson: {successes} successes out of {n} is not a proportion")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def within_noise(interval: tuple[float, float]) -> bool:
    """True when the interval contains 0: the difference could be either sign."""
    low, high = interval
    return low <= 0.0 <= high


@dataclass(frozen=True)
class Proportion:
    """`successes` out of `n`, with its Wilson interval."""

    successes: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.successes / self.n if self.n else math.nan

    def text(self) -> str:
        """'0.786 (22/28, 95% CI 0.604–0.898)'."""
        return (f"{self.value:.3f} ({self.successes}/{self.n}, "
                f"95% CI {self.low:.3f}–{self.high:.3f})")


def proportion(successes: int, n: int, z: float = Z95) -> Proportion:
    return Proportion(successes, n, *wilson(successes, n, z))


@dataclass(frozen=True)
class PairedDifference:
    """first − second on the same n questions, as the paired 2×2 table:

    both: both right (a); only_first: first right, second wrong (b);
    only_second: first wrong, second right (c); neither: both wrong (d)."""

    both: int
    only_first: int
    only_second: int
    neither: int
    low: float
    high: float

    @property
    def n(self) -> int:
        return self.both + self.only_first + self.only_second + self.neither

    @property
    def estimate(self) -> float:
        """(b − c) / n, which equals p_first − p_second."""
        return (self.only_first - self.only_second) / self.n

    @property
    def within_noise(self) -> bool:
        return within_noise((self.low, self.high))

    def text(self) -> str:
        """'+0.071 (95% CI -0.089 to +0.229; 28 paired questions, 3 better, 1 worse)'."""
        return (f"{self.estimate:+.3f} (95% CI {self.low:+.3f} to {self.high:+.3f}; "
                f"{self.n} paired questions, {self.only_first} better, "
                f"{self.only_second} worse)" + (" — within noise" if self.within_noise else ""))


def _phi(a: int, b: int, c: int, d: int) -> float:
    """Newcombe's correlation of the pairs, φ = (ad − bc)/√(efgh) over the four margins,
    with his continuity adjustment: ad − bc is reduced by n/2 when it exceeds n/2, counts as
    0 between 0 and n/2, and is kept as it is when negative; φ = 0 when a margin is 0."""
    n = a + b + c + d
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins == 0:
        return 0.0
    cross = a * d - b * c
    if cross > n / 2:
        adjusted = cross - n / 2
    elif cross >= 0:
        adjusted = 0.0
    else:
        adjusted = float(cross)
    return adjusted / math.sqrt(margins)


def paired_table(first: Sequence[bool], second: Sequence[bool]) -> tuple[int, int, int, int]:
    """(a, b, c, d) of two verdict vectors on the same questions, in the same order."""
    if len(first) != len(second):
        raise ValueError(f"paired verdicts differ in length: {len(first)} and {len(second)}")
    pairs = list(zip(map(bool, first), map(bool, second), strict=True))
    return (pairs.count((True, True)), pairs.count((True, False)),
            pairs.count((False, True)), pairs.count((False, False)))


def newcombe_paired(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's (1998, method 10) interval for p1 − p2 = (b − c)/n from a paired table:

        p1 = (a + b)/n with Wilson interval (l1, u1); p2 = (a + c)/n with (l2, u2);
        L = θ − √((p1 − l1)² − 2φ(p1 − l1)(u2 − p2) + (u2 − p2)²),
        U = θ + √((u1 − p1)² − 2φ(u1 − p1)(p2 − l2) + (p2 − l2)²),

    clipped to [−1, 1]."""
    n = a + b + c + d
    if n == 0:
        raise ValueError("a paired difference needs at least one pair")
    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson(a + b, n, z), wilson(a + c, n, z)
    theta, phi = p1 - p2, _phi(a, b, c, d)
    dl = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    du = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    return max(-1.0, theta - math.sqrt(max(dl, 0.0))), min(1.0, theta + math.sqrt(max(du, 0.0)))


def paired_difference(first: Sequence[bool], second: Sequence[bool],
                      z: float = Z95) -> PairedDifference:
    """first − second on the same questions (verdicts in the same order), with Newcombe's
    paired interval. Raises ValueError when there is no pair."""
    a, b, c, d = paired_table(first, second)
    return PairedDifference(a, b, c, d, *newcombe_paired(a, b, c, d, z))
