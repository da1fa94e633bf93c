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
