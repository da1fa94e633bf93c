"""MLPerf's scoring of ImageNet logits: argmax over all outputs, minus the background offset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 1000


@dataclass
class Score:
    good: int
    total: int
    top5_good: int
    predictions: np.ndarray  # 0..999, -1 for background

    @property
    def top1(self) -> float:
        return 100.0 * self.good / self.total

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_good / self.total

    def mlperf_line(self) -> str:
        return f"accuracy={self.top1:.3f}%, good={self.good}, total={self.total}"


def class_offset(logits: np.ndarray) -> int:
    """1 for TF-slim/MLPerf outputs (1001, index 0 = background), 0 for plain 1000-class outputs."""
    offset = logits.shape[1] - NUM_CLASSES
    if offset not in (0, 1):
        raise ValueError(f"model outputs {logits.shape[1]} classes; expected 1000 or 1001")
    return offset


def score(logits: np.ndarray, labels) -> Score:
    """MLPerf's scoring: argmax over all outputs, minus the background offset (background = wrong)."""
    labels = np.asarray(labels)
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits for {len(labels)} labels")
    offset = class_offset(logits)
    predictions = logits.argmax(axis=1) - offset
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5] - offset
    return Score(int((predictions == labels).sum()), len(labels),
                 int((top5 == labels[:, None]).any(axis=1).sum()), predictions)
