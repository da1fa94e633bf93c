"""The model's own input normalisation, applied to cached crops at evaluation.

Each normaliser is MLPerf's numpy arithmetic, verbatim. It is element-wise on a uint8 value (and
channel), so it is evaluated once on all 256 values per channel into a lookup table; indexing the
table then reproduces MLPerf's float32 arrays bit for bit on any device.
"""

from __future__ import annotations

import numpy as np


def mlperf_mobilenet(img: np.ndarray) -> np.ndarray:
    """MLPerf `pre_process_mobilenet`: [0, 255] to [-1, 1]."""
    img = np.asarray(img, dtype="float32")
    img /= 255.0
    img -= 0.5
    img *= 2
    return img


def mlperf_vgg(img: np.ndarray) -> np.ndarray:
    """MLPerf `pre_process_vgg` (ResNet-50): RGB mean subtraction, no std."""
    img = np.asarray(img, dtype="float32")
    means = np.array([123.68, 116.78, 103.94], dtype=np.float32)
    img -= means
    return img


NORMALIZERS = {"mobilenet": mlperf_mobilenet, "vgg": mlperf_vgg}


def lookup_table(kind: str) -> np.ndarray:
    """float32 table T[value, channel] with T[v, c] = normaliser(pixel of value v in channel c)."""
    if kind not in NORMALIZERS:
        raise ValueError(f"unknown normalization '{kind}'; known: {', '.join(NORMALIZERS)}")
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # a 256 x 3 "image row"
    return np.ascontiguousarray(NORMALIZERS[kind](values), dtype=np.float32)


def apply_table(table: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 to float32 NHWC through the table."""
    return table[crops, np.arange(3)]


class Normalizer:
    """The model's normalisation for a cache's crops: through the table for uint8 crops, MLPerf's
    arithmetic itself for float32 crops (pipelines without a uint8 intermediate)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.table = lookup_table(kind)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        if crops.dtype == np.uint8:
            return apply_table(self.table, crops)
        return NORMALIZERS[self.kind](np.array(crops, dtype=np.float32))
