"""TF-slim MobileNet-v1 in PyTorch, built from a spec read off the frozen graph."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from benchmark.nn.layers import ConvBnReLU6, ConvSpec, fold_batch_norms


@dataclass
class MobileNetV1Spec:
    layers: list[ConvSpec]  # TF-slim names: Conv2d_0, Conv2d_1_depthwise, Conv2d_1_pointwise, ...
    pool_kernel: int
    pool_stride: int
    num_classes: int
    image_size: int | None = None
    taps: list[list[str]] = field(default_factory=list)  # [module path, TF tensor] pairs, in order
    folded: bool = False  # batch norms folded into the convolutions in the checkpoint itself (ONNX)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MobileNetV1Spec":
        d = dict(d)
        d["layers"] = [ConvSpec(**layer) for layer in d["layers"]]
        return cls(**d)


def squeezed(x: torch.Tensor) -> torch.Tensor:
    """The graph's SpatialSqueeze: 1 x 1 logits to [N, classes], refusing any other size."""
    if x.shape[-2:] != (1, 1):
        raise ValueError(f"logits have spatial size {tuple(x.shape[-2:])}, the graph squeezes 1x1: "
                         "the input size does not fit this graph")
    return x.flatten(1)


torch.fx.wrap("squeezed")  # a leaf for FX tracing (int8 quantization): the check runs on real tensors


class MobileNetV1(nn.Module):
    """Input NCHW float in [-1, 1]; output logits [N, num_classes] (index 0 is background)."""

    def __init__(self, spec: MobileNetV1Spec):
        super().__init__()
        self.spec = spec
        self.features = nn.Sequential(OrderedDict(
            (s.name.lower(), ConvBnReLU6(s)) for s in spec.layers
        ))
        # TF-slim's AvgPool_1a: VALID, kernel min(7, feature size), stride 2, from the graph.
        self.pool = nn.AvgPool2d(spec.pool_kernel, spec.pool_stride)
        self.classifier = nn.Conv2d(spec.layers[-1].cout, spec.num_classes, 1, bias=True)
        if spec.folded:
            fold_batch_norms(self)  # the structure of a folded model; its weights are loaded after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return squeezed(self.classifier(self.pool(x)))


# TF-slim's MobileNet-v1: after Conv2d_0, 13 depthwise-separable blocks (pointwise channels at depth 1.0, stride)
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]


def depth(channels: int, multiplier: float) -> int:
    return max(int(channels * multiplier), 8)  # TF-slim's min_depth = 8


def mlperf_layers(multiplier: float = 1.0) -> list[tuple[str, bool, int | None, int]]:
    """(name, depthwise, out channels (None: a depthwise layer keeps its input's), stride) of
    TF-slim's 27 conv layers at depth `multiplier`."""
    layers = [("Conv2d_0", False, depth(32, multiplier), 2)]
    for i, (channels, stride) in enumerate(BLOCKS, 1):
        layers.append((f"Conv2d_{i}_depthwise", True, None, stride))
        layers.append((f"Conv2d_{i}_pointwise", False, depth(channels, multiplier), 1))
    return layers


def random_model(seed: int = 0) -> MobileNetV1:
    """MLPerf's MobileNet-v1 1.0/224 with seeded random weights, batch norms folded: for timing,
    not for accuracy."""
    from benchmark.nn.layers import random_weights

    specs, cin = [], 3
    for name, depthwise, cout, stride in mlperf_layers():
        cout = cin if depthwise else cout
        specs.append(ConvSpec(name, cin, cout, 1 if name.endswith("pointwise") else 3, stride, 1e-3, True, depthwise))
        cin = cout
    return random_weights(MobileNetV1(MobileNetV1Spec(specs, 7, 2, 1001, 224, folded=True)), seed)
