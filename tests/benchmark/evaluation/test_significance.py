"""The exact McNemar test against values worked by hand, the flips it is computed from, and the
confidence interval of a paired difference."""

import math
import signal
from fractions import Fraction
from math import comb, exp

import numpy as np
import pytest

from benchmark.evaluation import significance
from benchmark.evaluation.significance import binomial_tail_log, mcnemar_exact, paired


@pytest.mark.parametrize("fixed, broken, p", [
    (0, 0, 1.0),  # no flips: nothing to test
    (0, 5, 2 * 1 / 32),  # 2 * C(5,0) / 2^5
    (5, 0, 0.0625),  # symmetric
    (1, 9, 2 * (1 + 10) / 1024),  # 0.021484375
    (2, 8, 2 * (1 + 10 + 45) / 1024),  # 0.109375
    (3, 3, 1.0),  # 2 * (1 + 6 + 15 + 20) / 64 > 1: capped
    (4, 6, 2 * (1 + 10 + 45 + 120 + 210) / 1024),  # 0.75390625
])
def test_mcnemar_by_hand(fixed, broken, p):
    assert mcnemar_exact(fixed, broken) == p


def test_large_counts_do_not_underflow():
    assert mcnemar_exact(0, 1100) == 0.0  # 2^-1099, exact until the end, is below float's smallest value
    assert mcnemar_exact(0, 60) == 2.0 ** -59
    assert mcnemar_exact(500, 500) == 1.0


def by_definition(fixed: int, broken: int) -> float:
    """The p-value as the definition writes it, in exact fractions (slow for thousands of flips)."""
    n, k = fixed + broken, min(fixed, broken)
    return float(min(Fraction(1), 2 * Fraction(sum(comb(n, i) for i in range(k + 1)), 2 ** n)))


@pytest.mark.parametrize("fixed, broken", [(0, 30), (7, 20), (120, 160), (480, 520), (1000, 1100), (1500, 1501),
                                           (1800, 2000)])
def test_log_space_tail_against_the_definition(fixed, broken):
    exact = by_definition(fixed, broken)
    assert mcnemar_exact(fixed, broken) == exact  # the integer sum: the same float
    approx = min(1.0, 2 * exp(binomial_tail_log(fixed + broken, min(fixed, broken))))
    assert approx == pytest.approx(exact, rel=1e-9, abs=0)


def test_log_space_above_the_exact_limit(monkeypatch):
    """Past EXACT_UP_TO flips the log-space form answers; within 1e-9 of the integer sum there."""
    cases = [(10_500, 10_500), (10_300, 10_800), (12_000, 13_000), (24_000, 26_000)]
    fast = [mcnemar_exact(f, b) for f, b in cases]
    monkeypatch.setattr(significance, "EXACT_UP_TO", 10**9)
    assert fast == pytest.approx([mcnemar_exact(f, b) for f, b in cases], rel=1e-9, abs=0)
    assert fast[0] == 1.0 and 0 < fast[-1] < 1e-15


def test_a_50000_image_table_does_not_stall():
    """The exact sum as once written took seconds at 6,000 flips, growing faster than linearly: a
    table of a 50,000-image sweep stalled. A stall guard, not a speed measurement: the limit is
    a hundred times what these take."""
    def stalled(signum, frame):
        raise TimeoutError("McNemar's p took over 20 s for 20 pairs of runs")
    previous = signal.signal(signal.SIGALRM, stalled)
    signal.alarm(20)
    try:
        for i in range(20):
            mcnemar_exact(3000 + 50 * i, 3300 + 40 * i)
            mcnemar_exact(20_000 - 13 * i, 21_000)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_paired_counts_flips_each_way():
    labels = [1, 2, 3, 4, 5, 6]
    a = [1, 2, 0, 0, 5, 9]  # right on 0, 1, 4
    b = [1, 0, 3, 4, 5, 7]  # right on 0, 2, 3, 4
    r = paired(labels, a, b, [f"img{i}" for i in range(6)])
    assert (r["good_a"], r["good_b"], r["fixed"], r["broken"], r["same_prediction"]) == (3, 4, 2, 1, 2)
    assert r["fixed_images"] == ["img2", "img3"] and r["broken_images"] == ["img1"]
    assert r["mcnemar_p"] == 1.0  # 2 * (1 + 3) / 8 capped
    with pytest.raises(ValueError, match="2 and 3 predictions for 3 labels"):
        paired([1, 2, 3], [1, 2], [1, 2, 3])


def test_paired_difference_ci_by_hand():
    """Agresti-Min by hand: 30 fixed, 10 broken of 200: cells + 0.5 over n + 2 = 202; f = 30.5/202,
    b = 10.5/202; half-width 1.96 * sqrt((f + b - (f - b)^2) / 202)."""
    from benchmark.evaluation.significance import paired_difference_ci

    f, b = 30.5 / 202, 10.5 / 202
    half = 1.959963984540054 * math.sqrt((f + b - (f - b) ** 2) / 202)
    low, high = paired_difference_ci(30, 10, 200)
    assert (low, high) == pytest.approx((f - b - half, f - b + half), abs=1e-15)
    assert low == pytest.approx(0.03840, abs=1e-5) and high == pytest.approx(0.15962, abs=1e-5)  # worked on paper
    assert paired_difference_ci(0, 0, 1000)[0] < 0 < paired_difference_ci(0, 0, 1000)[1]  # no flips: not a point
    assert paired_difference_ci(10, 30, 200) == pytest.approx((-high, -low))  # symmetric
    lo, hi = paired_difference_ci(5, 0, 5)
    assert -1 <= lo and hi <= 1
    with pytest.raises(ValueError):
        paired_difference_ci(3, 3, 5)


def test_paired_difference_ci_covers_about_95_percent():
    """Simulated: two classifiers whose flips are 8 % and 5 % of 1,000 images (true difference 3
    points); the interval covers it in 93-97 % of 2,000 draws (a faulty interval, e.g. a plain
    binomial one on the difference, falls well outside)."""
    from benchmark.evaluation.significance import paired_difference_ci

    rng = np.random.default_rng(0)
    counts = rng.multinomial(1000, [0.08, 0.05, 0.87], size=2000)
    covered = sum(lo <= 0.03 <= hi for lo, hi in (paired_difference_ci(f, b, 1000) for f, b, _ in counts))
    assert 0.93 <= covered / 2000 <= 0.97
