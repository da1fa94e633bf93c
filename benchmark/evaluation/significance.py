"""Is a difference in top-1 between two runs on the same images real? The images each run gets
right and the other wrong, and the exact McNemar test on them (two-sided: the binomial test of the
flips against even odds, as small counts need)."""

from __future__ import annotations

from math import exp, lgamma, log

import numpy as np

EXACT_UP_TO = 20_000  # flips: exact integer arithmetic takes at most ~30 ms up to here


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact p-value for `fixed` images only run B gets right and `broken` only run A gets
    right: twice the binomial tail of the smaller count at p = 1/2, at most 1; 1 with no flips.
    Summed in integers (no float underflow at 50,000 images) up to EXACT_UP_TO flips, in log space
    above (`binomial_tail_log`: within 1e-9 of the exact value, tested)."""
    n, k = fixed + broken, min(fixed, broken)
    if n > EXACT_UP_TO:
        return min(1.0, 2 * exp(binomial_tail_log(n, k)))
    term = total = 1  # C(n, i), and the sum of C(n, 0..i), each C(n, i) from the last
    for i in range(k):
        term = term * (n - i) // (i + 1)
        total += term
    return min(1.0, 2 * total / 2 ** n)  # int / int: correctly rounded, whatever the size


def binomial_tail_log(n: int, k: int) -> float:
    """log P(X <= k) for X ~ Binomial(n, 1/2), k <= n / 2: the last term from lgamma, the others as
    ratios of it (each C(n, i-1) / C(n, i) = i / (n - i + 1)), summed until they no longer count."""
    ratio_sum, term = 1.0, 1.0
    for i in range(k, 0, -1):
        term *= i / (n - i + 1)
        ratio_sum += term
        if term < 1e-17 * ratio_sum:
            break
    return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1) - n * log(2) + log(ratio_sum)


def paired(labels, a, b, names: list[str] | None = None) -> dict:
    """Run A's and run B's predictions on the same images: B's fixes and breakages against A, the
    McNemar p-value, and the files of each flip (when `names` is given)."""
    labels, a, b = (np.asarray(v) for v in (labels, a, b))
    if not (len(labels) == len(a) == len(b)):
        raise ValueError(f"paired comparison of {len(a)} and {len(b)} predictions for {len(labels)} labels")
    right_a, right_b = a == labels, b == labels
    fixed, broken = np.flatnonzero(~right_a & right_b), np.flatnonzero(right_a & ~right_b)
    out = {"images": int(len(labels)), "good_a": int(right_a.sum()), "good_b": int(right_b.sum()),
           "fixed": int(len(fixed)), "broken": int(len(broken)),
           "same_prediction": int((a == b).sum()), "mcnemar_p": mcnemar_exact(len(fixed), len(broken))}
    if names is not None:
        out["fixed_images"] = [names[i] for i in fixed]
        out["broken_images"] = [names[i] for i in broken]
    return out
