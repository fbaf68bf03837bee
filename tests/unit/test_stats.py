"""The interval statistics against hand-computed and published values.

Wilson (z = 1.959964, z² = 3.841459):
    centre = (p + z²/2n) / (1 + z²/n),  half = z·√(p(1−p)/n + z²/4n²) / (1 + z²/n)

Newcombe's paired interval (1998, method 10) for p1 − p2 from a paired table (a, b, c, d):
    L = θ − √((p1 − l1)² − 2φ(p1 − l1)(u2 − p2) + (u2 − p2)²)
    U = θ + √((u1 − p1)² − 2φ(u1 − p1)(p2 − l2) + (p2 − l2)²)
"""

from __future__ import annotations

import pytest

from llmops.evaluation.stats import (
    PairedDifference,
    newcombe_paired,
    paired_difference,
    paired_table,
    proportion,
    wilson,
    within_noise,
)


@pytest.mark.parametrize("successes,n,low,high", [
    # 8/10: p = 0.8, z²/n = 0.384146, denominator 1.384146;
    #   centre = (0.8 + 0.192073)/1.384146 = 0.716740
    #   half = 1.959964·√(0.016 + 0.0096037)/1.384146 = 1.959964·0.160011/1.384146 = 0.226578
    #   → 0.490162 to 0.943318
    (8, 10, 0.4902, 0.9433),
    # 0/10: centre = 0.192073/1.384146 = 0.138766 = half → 0 to 0.277533
    (0, 10, 0.0, 0.2775),
    # 10/10: the mirror image of 0/10 → 1 − 0.277533 = 0.722467 to 1
    (10, 10, 0.7225, 1.0),
    # 14/28: p = 0.5, centre 0.5; denominator 1 + 3.841459/28 = 1.137195;
    #   half = 1.959964·√(0.25/28 + 3.841459/3136)/1.137195
    #        = 1.959964·√(0.00892857 + 0.00122496)/1.137195 = 1.959964·0.100765/1.137195
    #        = 0.173669 → 0.326331 to 0.673669
    (14, 28, 0.3263, 0.6737),
    # 22/28: p = 0.785714; centre = (0.785714 + 0.068597)/1.137195 = 0.751245;
    #   half = 1.959964·√(0.785714·0.214286/28 + 0.00122496)/1.137195
    #        = 1.959964·√(0.00601312 + 0.00122496)/1.137195 = 1.959964·0.085077/1.137195
    #        = 0.146631 → 0.604614 to 0.897875
    (22, 28, 0.6046, 0.8979),
])
def test_wilson_against_hand_computed_values(successes: int, n: int, low: float,
                                             high: float) -> None:
    got = wilson(successes, n)
    assert got == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_wilson_edges_are_exact_and_empty_is_the_whole_range() -> None:
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert wilson(0, 0) == (0.0, 1.0)  # nothing observed: any proportion is possible
    for bad in ((-1, 5), (6, 5), (1, -1)):
        with pytest.raises(ValueError):
            wilson(*bad)


def test_proportion_text_shows_the_sample_size_and_interval() -> None:
    assert proportion(22, 28).text() == "0.786 (22/28, 95% CI 0.605–0.898)"


def test_newcombe_paired_against_a_hand_computed_table() -> None:
    # a=5 both right, b=3 only the first right, c=1 only the second, d=1 neither; n = 10.
    # p1 = 8/10 = 0.8 (Wilson 0.490162 to 0.943318), p2 = 6/10 = 0.6:
    #   centre = (0.6 + 0.192073)/1.384146 = 0.572247,
    #   half = 1.959964·√(0.024 + 0.0096037)/1.384146 = 0.259573 → 0.312673 to 0.831819.
    # φ: ad − bc = 5 − 3 = 2 lies in [0, n/2 = 5], so φ = 0.
    # θ = 0.2; L = 0.2 − √(0.309838² + 0.231819²) = 0.2 − √0.149739 = 0.2 − 0.386961
    #            = −0.186961;
    #          U = 0.2 + √(0.143318² + 0.287327²) = 0.2 + √0.103097 = 0.2 + 0.321087 = 0.521087
    low, high = newcombe_paired(5, 3, 1, 1)
    assert low == pytest.approx(-0.186961, abs=5e-6)
    assert high == pytest.approx(0.521087, abs=5e-6)


def test_newcombe_paired_against_published_values() -> None:
    # Complete response before and after consolidation therapy (Cavo et al. 2012), the
    # paired example of Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency
    # Tables" (2017), ch. 8: table 59, 6 / 16, 80; Newcombe square-and-add estimate −0.0621,
    # 95% CI −0.1186 to −0.0046. Here ad − bc = 4624 > n/2, so φ is non-zero.
    low, high = newcombe_paired(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def test_paired_difference_from_verdict_vectors() -> None:
    first = [True] * 5 + [True] * 3 + [False] + [False]
    second = [True] * 5 + [False] * 3 + [True] + [False]
    assert paired_table(first, second) == (5, 3, 1, 1)
    diff = paired_difference(first, second)
    assert isinstance(diff, PairedDifference)
    assert diff.n == 10 and diff.estimate == pytest.approx(0.2)
    assert diff.within_noise  # −0.187 to +0.521 contains 0
    assert diff.text() == ("+0.200 (95% CI -0.187 to +0.521; 10 paired questions, 3 better, "
                           "1 worse) — within noise")


def test_a_clear_difference_is_not_noise_and_identical_verdicts_are() -> None:
    # 20/0/0/0 → b=20: p1 = 1 (Wilson 0.838875 to 1), p2 = 0 (0 to 0.161125), φ = 0 (a
    # margin is 0): L = 1 − √(0.161125² + 0.161125²) = 1 − 0.227865 = 0.772135, U = 1.
    clear = paired_difference([True] * 20, [False] * 20)
    assert clear.estimate == 1.0 and clear.high == 1.0
    assert clear.low == pytest.approx(0.772135, abs=5e-6)
    assert not clear.within_noise
    same = paired_difference([True, False] * 10, [True, False] * 10)
    assert same.estimate == 0.0 and same.low < 0 < same.high and same.within_noise


def test_within_noise_includes_the_ends() -> None:
    assert within_noise((-0.1, 0.2)) and within_noise((0.0, 0.3)) and within_noise((-0.3, 0.0))
    assert not within_noise((0.01, 0.3)) and not within_noise((-0.3, -0.01))


def test_paired_difference_needs_pairs_of_equal_length() -> None:
    with pytest.raises(ValueError):
        paired_difference([], [])
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])
