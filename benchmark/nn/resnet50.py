"""ResNet-50 v1.5 with TF official ResNet's arithmetic, in torchvision's parameter names.

Differences from torchvision's `resnet50`, each worth top-1 digits on MLPerf's graph: the stem max
pool pads TF-SAME (0 before, 1 after at 112) instead of (1, 1); batch norm uses the graph's epsilon
(1.001e-5) and TF's fused-kernel arithmetic; 1001 outputs with background at index 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from benchmark.nn.layers import ConvSpec, MaxPool2dSame, fold_batch_norms, make_bn, make_conv


@dataclass
class BlockSpec:
    conv1: ConvSpec
    conv2: ConvSpec  # carries the block's stride (v1.5)
    conv3: ConvSpec
    downsample: ConvSpec | None = None  # projection shortcut


@dataclass
class ResNetSpec:
    stem: ConvSpec
    pool_kernel: int
    pool_stride: int
    layers: list[list[BlockSpec]]  # stages of bottleneck blocks
    num_classes: int
    image_size: int | None = None
    taps: list[list[str]] = field(default_factory=list)  # [module path, TF tensor] pairs, in order
    folded: bool = False  # batch norms folded into the convolutions in the checkpoint itself (ONNX)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ResNetSpec":
        def conv(c):
            return ConvSpec(**c) if c is not None else None

        d = dict(d)
        d["stem"] = conv(d["stem"])
        d["layers"] = [[BlockSpec(**{k: conv(v) for k, v in b.items()}) for b in stage] for stage in d["layers"]]
        return cls(**d)


class Bottleneck(nn.Module):
    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.conv1, self.bn1 = make_conv(spec.conv1), make_bn(spec.conv1)
        self.conv2, self.bn2 = make_conv(spec.conv2), make_bn(spec.conv2)
        self.conv3, self.bn3 = make_conv(spec.conv3), make_bn(spec.conv3)
        self.relu = nn.ReLU(inplace=True)  # every input it sees is a fresh batch-norm output or sum
        self.downsample = (nn.Sequential(make_conv(spec.downsample), make_bn(spec.downsample))
                           if spec.downsample else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out.add_(shortcut))


class ResNet50(nn.Module):
    """Input NCHW float (RGB minus MLPerf's means); output logits [N, num_classes]."""

    def __init__(self, spec: ResNetSpec):
        super().__init__()
        self.spec = spec
        self.conv1, self.bn1 = make_conv(spec.stem), make_bn(spec.stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = MaxPool2dSame(spec.pool_kernel, spec.pool_stride)
        for i, stage in enumerate(spec.layers, 1):
            setattr(self, f"layer{i}", nn.Sequential(*(Bottleneck(b) for b in stage)))
        self.fc = nn.Linear(spec.layers[-1][-1].conv3.cout, spec.num_classes)
        if spec.folded:
            fold_batch_norms(self)  # the structure of a folded model; its weights are loaded after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, len(self.spec.layers) + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(x.mean(dim=(2, 3)))


# ResNet-50's four stages: (bottleneck blocks, width, the first block's stride)
STAGES = [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)]


def random_model(seed: int = 0) -> ResNet50:
    """MLPerf's ResNet-50 v1.5 with seeded random weights, batch norms folded: for timing, not for
    accuracy."""
    from benchmark.nn.layers import random_weights

    def conv(name, cin, cout, k, s, padding):
        return ConvSpec(name, cin, cout, k, s, 1e-3, True, False, [padding] * 4)

    stages, cin = [], 64
    for i, (blocks, width, stride) in enumerate(STAGES, 1):
        stage = []
        for b in range(blocks):
            s, name = stride if b == 0 else 1, f"stage{i}_block{b}"
            stage.append(BlockSpec(conv(f"{name}_1", cin, width, 1, 1, 0), conv(f"{name}_2", width, width, 3, s, 1),
                                   conv(f"{name}_3", width, width * 4, 1, 1, 0),
                                   conv(f"{name}_sc", cin, width * 4, 1, s, 0) if b == 0 else None))
            cin = width * 4
        stages.append(stage)
    spec = ResNetSpec(conv("stem", 3, 64, 7, 2, 3), 3, 2, stages, 1001, 224, folded=True)
    return random_weights(ResNet50(spec), seed)
