"""MLPerf's scoring of ImageNet logits: argmax over all outputs, minus the background offset; and
each image's call (its five best classes with their probabilities, and the true label's), which
the reports read to show how close a call was."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 1000
CHUNK = 4096  # rows per softmax: float64 over 50,000 x 1001 logits at once would take 400 MB
DIGITS = 5  # probabilities recorded to 1e-5: finer than any margin a report calls a near-tie


@dataclass
class Score:
    good: int
    total: int
    top5_good: int
    predictions: np.ndarray  # 0..999, -1 for background
    top5_classes: np.ndarray  # N x 5, best first, as predictions
    top5_probs: np.ndarray  # N x 5: their softmax probabilities (over all outputs)
    label_probs: np.ndarray  # N: the true label's probability

    @property
    def top1(self) -> float:
        return 100.0 * self.good / self.total

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_good / self.total

    def mlperf_line(self) -> str:
        return f"accuracy={self.top1:.3f}%, good={self.good}, total={self.total}"

    def calls(self, positions: list[int], count: int) -> dict:
        """The per-image calls for a results JSON: lists of `count` entries, image i at positions[i],
        None where no image was scored (skipped as unreadable)."""
        out: dict = {"top5": [None] * count, "top5_prob": [None] * count, "label_prob": [None] * count}
        classes, probs = self.top5_classes.tolist(), np.round(self.top5_probs, DIGITS).tolist()
        label = np.round(self.label_probs, DIGITS).tolist()
        for row, i in enumerate(positions):
            out["top5"][i], out["top5_prob"][i], out["label_prob"][i] = classes[row], probs[row], label[row]
        return out


def class_offset(logits: np.ndarray) -> int:
    """1 for TF-slim/MLPerf outputs (1001, index 0 = background), 0 for plain 1000-class outputs."""
    offset = logits.shape[1] - NUM_CLASSES
    if offset not in (0, 1):
        raise ValueError(f"model outputs {logits.shape[1]} classes; expected 1000 or 1001")
    return offset


def softmax_top5(logits: np.ndarray, labels: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's five best outputs (best first, ties to the lower index, as argmax breaks them), their
    softmax probabilities and the label's, in float64, a chunk of rows at a time."""
    n = len(logits)
    classes, probs, label_probs = np.empty((n, 5), np.int64), np.empty((n, 5)), np.empty(n)
    for start in range(0, n, CHUNK):
        raw = logits[start:start + CHUNK]
        best = np.argsort(-raw, axis=1, kind="stable")[:, :5]  # on the logits: the top-1 is argmax's
        block = raw.astype(np.float64)
        block = np.exp(block - block.max(axis=1, keepdims=True))
        block /= block.sum(axis=1, keepdims=True)
        rows = np.arange(len(block))[:, None]
        classes[start:start + CHUNK], probs[start:start + CHUNK] = best - offset, block[rows, best]
        label_probs[start:start + CHUNK] = block[rows[:, 0], labels[start:start + CHUNK] + offset]
    return classes, probs, label_probs


def score(logits: np.ndarray, labels) -> Score:
    """MLPerf's scoring: argmax over all outputs, minus the background offset (background = wrong)."""
    labels = np.asarray(labels)
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits for {len(labels)} labels")
    offset = class_offset(logits)
    predictions = logits.argmax(axis=1) - offset
    top5, probs, label_probs = softmax_top5(logits, labels, offset)
    return Score(int((predictions == labels).sum()), len(labels),
                 int((top5 == labels[:, None]).any(axis=1).sum()), predictions, top5, probs, label_probs)
