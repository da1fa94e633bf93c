"""The exact McNemar test against values worked by hand, and the flips it is computed from."""

import pytest

from benchmark.evaluation.significance import mcnemar_exact, paired


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
