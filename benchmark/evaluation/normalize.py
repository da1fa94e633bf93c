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


VGG_MEANS = [123.68, 116.78, 103.94]


def mlperf_vgg(img: np.ndarray) -> np.ndarray:
    """MLPerf `pre_process_vgg` (ResNet-50): RGB mean subtraction, no std."""
    img = np.asarray(img, dtype="float32")
    means = np.array(VGG_MEANS, dtype=np.float32)
    img -= means
    return img


def plain(img: np.ndarray) -> np.ndarray:
    """No normalisation: float32 [0, 255] (for a graph that normalises its own input, as Keras'
    EfficientNet does)."""
    return np.asarray(img, dtype="float32")


TORCHVISION_MEAN, TORCHVISION_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def torchvision(img: np.ndarray) -> np.ndarray:
    """torchvision's ImageNet normalisation: [0, 1], then the channel means subtracted and divided by
    the standard deviations (Keras' "torch" mode)."""
    img = np.asarray(img, dtype="float32")
    img /= 255.0
    img -= np.array(TORCHVISION_MEAN, dtype=np.float32)
    img /= np.array(TORCHVISION_STD, dtype=np.float32)
    return img


CAFFE_MEANS = [103.939, 116.779, 123.68]  # B, G, R


def caffe(img: np.ndarray) -> np.ndarray:
    """Keras' "caffe" mode (its ResNet50, VGG16/19): the channels reversed, RGB to BGR, then the BGR
    means subtracted in float32, no scaling."""
    img = np.asarray(img, dtype="float32")[..., ::-1]
    return img - np.array(CAFFE_MEANS, dtype=np.float32)


NORMALIZERS = {"mobilenet": mlperf_mobilenet, "vgg": mlperf_vgg, "none": plain, "torchvision": torchvision,
               "caffe": caffe}
# The input channel each output channel reads, where a normaliser reorders them (RGB to BGR).
CHANNEL_ORDER = {"caffe": [2, 1, 0]}

# The same float32 operations in the same order, as in-place torch ops on a float32 tensor.
TORCH_ARITHMETIC = {
    "mobilenet": lambda x: x.div_(255.0).sub_(0.5).mul_(2),
    "vgg": lambda x: x.sub_(x.new_tensor(VGG_MEANS)),
    "none": lambda x: x,
    "torchvision": lambda x: x.div_(255.0).sub_(x.new_tensor(TORCHVISION_MEAN)).div_(x.new_tensor(TORCHVISION_STD)),
    "caffe": lambda x: x.flip(-1).sub_(x.new_tensor(CAFFE_MEANS)),
}


def lookup_table(kind: str) -> np.ndarray:
    """float32 table T[value, channel] with T[v, c] = normaliser(a pixel of value v) in channel c,
    where channel c reads the input's channel `CHANNEL_ORDER[kind][c]` (c itself unless reordered)."""
    if kind not in NORMALIZERS:
        raise ValueError(f"unknown normalization '{kind}'; known: {', '.join(NORMALIZERS)}")
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # a 256 x 3 "image row"
    return np.ascontiguousarray(NORMALIZERS[kind](values), dtype=np.float32)


def apply_table(table: np.ndarray, crops: np.ndarray, kind: str | None = None) -> np.ndarray:
    """N x H x W x 3 uint8 to float32 NHWC through the table (`kind`'s channel order)."""
    order = CHANNEL_ORDER.get(kind)
    return table[crops if order is None else crops[..., order], np.arange(3)]


class Normalizer:
    """The model's normalisation for a cache's crops (numpy, for TensorFlow and ONNX Runtime): MLPerf's
    arithmetic itself on the whole batch, uint8 or float32. It is element-wise, so a batch gets what
    the table (made from the same arithmetic, one value at a time) gives, bit for bit (tested), and
    3-13x faster than indexing the table: the peers pay what the torch runtime pays for its input."""

    def __init__(self, kind: str):
        self.kind = kind
        self.table = lookup_table(kind)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return NORMALIZERS[self.kind](np.array(crops, dtype=np.float32))  # a copy: the crops stay as they are


class TorchNormalizer:
    """uint8 NHWC crops on a device to the model's NCHW float32 input (channels-last in memory).

    MLPerf's arithmetic as torch ops is ~20x faster than indexing the table, but is used only when
    it reproduces the table for every value on this device (a device may, say, divide by multiplying
    with a reciprocal); otherwise the table is indexed. Either way the input is MLPerf's, bit for bit.
    """

    def __init__(self, normalizer: Normalizer, device):
        import torch

        self.table = torch.from_numpy(normalizer.table).to(device)
        self.channels = torch.arange(3, device=device)
        order = CHANNEL_ORDER.get(normalizer.kind)
        self.order = None if order is None else torch.tensor(order, device=device)
        self.arithmetic = TORCH_ARITHMETIC[normalizer.kind]
        # every value in every channel, the channels of a pixel differing (a reordering shows)
        values = (torch.arange(256, device=device)[:, None] + torch.tensor([0, 85, 170], device=device)) % 256
        self.exact_arithmetic = bool(torch.equal(self.arithmetic(values.float()), self._indexed(values)))

    def __call__(self, crops):
        if self.exact_arithmetic:
            x = self.arithmetic(crops.float())
        else:
            x = self._indexed(crops)
        return x.permute(0, 3, 1, 2)

    def _indexed(self, crops):
        crops = crops.long() if self.order is None else crops.long().index_select(-1, self.order)
        return self.table[crops, self.channels]
