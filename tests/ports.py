"""Hand-written PyTorch ports of MLPerf's models, as a user writes them (`model=module
model.module=tests.ports:NAME`): plain torch.nn layers and names of their own, nothing of the harness."""

from __future__ import annotations

import torch
from torch import nn


class SamePool(nn.Module):
    """TF's 3x3 stride-2 SAME max pool at an even input: nothing before, one row and column of -inf after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(nn.functional.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)


def resnet50_tf_pool() -> nn.Module:
    """Stock torchvision ResNet-50 with only its stem max pool padded as TF pads it."""
    import torchvision

    model = torchvision.models.resnet50()
    model.maxpool = SamePool()
    return model


def _conv_bn(cin: int, cout: int, stride: int, depthwise: bool, kernel: int, pad: tuple[int, int, int, int],
             folded: bool = False):
    """Padding, conv, batch norm, ReLU6; `folded`: the batch norm folded into the conv (its bias)."""
    conv = nn.Conv2d(cin, cout, kernel, stride, groups=cin if depthwise else 1, bias=folded)
    return nn.Sequential(nn.ZeroPad2d(pad), conv, *([] if folded else [nn.BatchNorm2d(cout, eps=1e-3)]), nn.ReLU6())


class MobileNetV1Port(nn.Module):
    """TF-slim's MobileNet-v1 at depth `multiplier`, 1001 classes, for even input sizes: SAME padding
    written out per layer (stride 2: (0, 1), stride 1: (1, 1)). `slip`: the index of one block whose
    depthwise conv is padded (1, 1) at stride 2, as PyTorch's padding=1 does: the classic porting slip.
    `folded`: each batch norm folded into its conv, as a port for inference often has it."""

    def __init__(self, multiplier: float = 1.0, slip: int | None = None, folded: bool = False):
        super().__init__()
        def depth(c: int) -> int:
            return max(int(c * multiplier), 8)

        blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
        self.stem = _conv_bn(3, depth(32), 2, False, 3, (0, 1, 0, 1), folded)
        layers, cin = [], depth(32)
        for i, (channels, stride) in enumerate(blocks):
            pad = (0, 1, 0, 1) if stride == 2 and i != slip else (1, 1, 1, 1)
            layers.append(nn.Sequential(_conv_bn(cin, cin, stride, True, 3, pad, folded),
                                        _conv_bn(cin, depth(channels), 1, False, 1, (0, 0, 0, 0), folded)))
            cin = depth(channels)
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 1001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def mobilenet_v1_state(exact: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The port's weights from the harness's export (`benchmark.export`, batch norms unfolded): the
    renaming a porter writes once."""
    names = sorted({k.split(".")[1] for k in exact if k.startswith("features.")},
                   key=lambda n: (int(n.split("_")[1]), "pointwise" in n))
    state = {}
    for n, layer in enumerate(names):
        to = "stem" if n == 0 else f"blocks.{(n - 1) // 2}.{(n - 1) % 2}"
        state[f"{to}.1.weight"] = exact[f"features.{layer}.conv.weight"]
        if f"features.{layer}.conv.bias" in exact:  # the batch norms folded (fold_bn=true)
            state[f"{to}.1.bias"] = exact[f"features.{layer}.conv.bias"]
            continue
        for key in ("weight", "bias", "running_mean", "running_var"):
            state[f"{to}.2.{key}"] = exact[f"features.{layer}.bn.{key}"]
        state[f"{to}.2.num_batches_tracked"] = torch.tensor(0)
    state["head.weight"] = exact["classifier.weight"].flatten(1)
    state["head.bias"] = exact["classifier.bias"]
    return state
