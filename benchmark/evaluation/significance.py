"""Is a difference in top-1 between two runs on the same images real? The images each run gets
right and the other wrong, and the exact McNemar test on them (two-sided: the binomial test of the
flips against even odds, as small counts need)."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact p-value for `fixed` images only run B gets right and `broken` only run A gets
    right: twice the binomial tail of the smaller count at p = 1/2, at most 1; 1 with no flips."""
    n, k = fixed + broken, min(fixed, broken)
    tail = Fraction(sum(comb(n, i) for i in range(k + 1)), 2 ** n)  # exact: no float underflow at 50,000
    return float(min(Fraction(1), 2 * tail))


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
