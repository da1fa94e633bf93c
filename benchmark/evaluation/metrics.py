"""The metrics a run is scored by, one descriptor each: its key in a results file's `metrics`, its
column in the tables and the report, and how it is computed from what a results file holds (so a
file written before the metric existed is scored too, where it holds what it needs).

Adding a metric is one `Metric` in METRICS (and its test): `python -m benchmark` and LoadGen's
accuracy runs record it (report.results_dict), `benchmark.table`'s runs.csv and runs.md and the HTML
report's accuracy table show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchmark.evaluation.results import Results


@dataclass(frozen=True)
class Metric:
    name: str  # the key in results["metrics"] and the tables' column
    title: str  # the report's column
    compute: Callable[[dict], float | None]  # from a results dict; None where it holds too little
    digits: int = 3
    asked_by: str | None = None  # a metric a run computes only when asked (its option); None: always

    def value(self, r: Results) -> float | None:
        """As recorded, else computed from the file (one written before the metric was)."""
        return r.metrics[self.name] if self.name in r.metrics else self.compute(r.data)

    def text(self, r: Results) -> str:
        v = self.value(r)
        return "" if v is None else f"{v:.{self.digits}f}"


def expected_calibration_error(r: dict, bins: int = 15) -> float | None:
    """Expected calibration error of the top-1 probability, in points: the images put in `bins`
    equal-width bins of the probability the model gave its answer (softmax over its outputs, as the
    results' calls record it), and the gap between each bin's accuracy and its mean probability,
    weighted by its share of the images (Guo et al., "On Calibration of Modern Neural Networks",
    2017). Images skipped as unreadable are left out. None without the calls (older files)."""
    calls = r.get("calls")
    if not calls or not r.get("ground_truth"):
        return None
    rows = [(probs[0], p == t) for p, t, probs in zip(r["predictions"], r["ground_truth"], calls["top5_prob"])
            if p is not None and probs is not None]
    if not rows:
        return None
    confidence = np.array([c for c, _ in rows], np.float64)
    right = np.array([ok for _, ok in rows], np.float64)
    which = np.minimum((confidence * bins).astype(int), bins - 1)  # a probability of 1.0 in the last bin
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.sum() * abs(right[inside].mean() - confidence[inside].mean())
    return 100.0 * gap / len(rows)


def _real(key: str) -> Callable[[dict], float | None]:
    """ImageNet-ReaL's score `key`, where the run scored it (labels.real=true)."""
    return lambda r: (r.get("real") or {}).get(key)


METRICS = (
    Metric("top1", "top-1", lambda r: r.get("top1")),
    Metric("top5", "top-5", lambda r: r.get("top5")),
    Metric("ece", "calibration error (ECE, top-1, 15 bins)", expected_calibration_error),
    Metric("real_top1", "ReaL top-1", _real("top1"), asked_by="labels.real=true"),
    Metric("real_top5", "ReaL top-5", _real("top5"), asked_by="labels.real=true"),
)


def measured(r: dict) -> dict:
    """Every metric of a results dict, for its `metrics` field."""
    return {m.name: m.compute(r) for m in METRICS}
