"""The converted model for CPU inference through oneDNN, each convolution with its activation (and
ResNet's residual add) fused into it and its weights prepacked once per batch size.

PyTorch's eager CPU path runs every convolution, ReLU/ReLU6 and residual add as its own pass over
memory and re-arranges each convolution's weights on every call. Here a convolution runs as one
oneDNN primitive with its activation as a post-op (and in ResNet's blocks the shortcut summed into
the output in place before the ReLU), on weights reordered into oneDNN's blocked format once.
The arithmetic is the same: the same convolution kernels, then the same float32 add and clamp on the
result, so the logits equal the eager model's (measured bit for bit on both models; the tests hold
them to the TensorFlow tolerance). Measured in results/benchmarks.md.

The oneDNN entry points (`torch.ops.mkldnn._convolution_pointwise`, the weight reorder) are the
ones `torch.compile` uses on CPU; where this PyTorch lacks them, `available()` is False and the
evaluator keeps the eager model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from benchmark.nn.layers import ConvBnReLU6, input_sizes, runs_own_code, static_padding


def available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight"))


class FusedConv2d(nn.Module):
    """conv -> activation ("none", "relu", or "hardtanh" with [0, 6] for ReLU6), or, with a shortcut,
    conv -> + shortcut -> ReLU, the sum written into the shortcut's memory."""

    def __init__(self, conv: nn.Conv2d, input_size: tuple[int, int], activation: str):
        super().__init__()
        if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
            raise ValueError(f"FusedConv2d needs fixed zero padding, got {conv.padding!r}")
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.input_size = tuple(input_size)
        self.activation = activation
        self.scalars = [0.0, 6.0] if activation == "hardtanh" else []
        self.register_buffer("weight", conv.weight.detach().contiguous())
        self.register_buffer("bias", conv.bias.detach().contiguous() if conv.bias is not None else None)
        self._packed: dict[int, torch.Tensor] = {}  # batch size -> weight in oneDNN's layout for it

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """The weight reordered for oneDNN, for the first batch size seen (the run's) and for 1 (what
        the warm-ups run). Any other size, as Server's dynamic batching or a last partial batch
        makes, takes the first size's: a convolution reads any layout of its weight the same way,
        and a pack per size would be made inside a timed query and kept, a copy of the weights each."""
        n = x.shape[0]
        if n not in self._packed:
            if self._packed and n != 1:
                return next(iter(self._packed.values()))
            self._packed[n] = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.to_mkldnn(), self.padding, self.stride, self.dilation, self.groups,
                [n, self.weight.shape[1] * self.groups, *self.input_size])
        return self._packed[n]

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor | None = None) -> torch.Tensor:
        args = (self.padding, self.stride, self.dilation, self.groups)
        if shortcut is None:
            return torch.ops.mkldnn._convolution_pointwise(x, self.packed(x), self.bias, *args, self.activation,
                                                           self.scalars, "")
        return torch.ops.mkldnn._convolution_pointwise_.binary(shortcut, x, self.packed(x), self.bias, *args, "add",
                                                               None, "relu", [], "")

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel={tuple(self.weight.shape[2:])}, " \
               f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, groups={self.groups}, " \
               f"activation={self.activation}"


class FusedBottleneck(nn.Module):
    def __init__(self, block: nn.Module, sizes: dict):
        super().__init__()
        self.conv1 = FusedConv2d(block.conv1, sizes[block.conv1], "relu")
        self.conv2 = FusedConv2d(block.conv2, sizes[block.conv2], "relu")
        self.conv3 = FusedConv2d(block.conv3, sizes[block.conv3], "none")
        self.downsample = FusedConv2d(block.downsample[0], sizes[block.downsample[0]], "none") \
            if block.downsample is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The shortcut is written over: the projection's fresh output, or the block's input, which
        # nothing reads after conv1 (the previous block's output, never the model's input).
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.conv3(self.conv2(self.conv1(x)), shortcut)


def has_rule(model: nn.Module) -> bool:
    """Whether `model`'s family has a fusion rule (benchmark/families: `cpu_fusion`)."""
    from benchmark.families import of_module

    family = of_module(model)
    return family is not None and family.has("cpu_fusion")


def _attributes(m: nn.Module) -> dict:
    """A module's settings (stride, padding, eps, ...): its plain attributes, tensors left out."""
    return {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"
            and not isinstance(v, torch.Tensor)}


def _equal(a, b) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # an array's elementwise ==: not a setting the rule reads, but not provably equal
        return False


def departure(model: nn.Module, exact: nn.Module) -> str | None:
    """Where `model` (a transform of `exact`, its family's converted model) computes something its
    family's fusion rule would not rebuild from its weights, or None where the rule computes what it
    computes. The rule reads weights and a fixed structure of the family's own layers, so `model`
    must have `exact`'s modules under the same names, of the same classes (not subclasses), with the
    same settings and no hook or forward of their own; weights may differ."""
    mods, exacts = dict(model.named_modules()), dict(exact.named_modules())
    for name, m in mods.items():
        where = name or "the model"
        if name not in exacts:
            return f"{where} ({type(m).__name__}) is not a module of the converted model"
        e = exacts[name]
        if type(m) is not type(e):
            return f"{where} is {type(m).__name__}, the converted model's {type(e).__name__}"
        if runs_own_code(m):
            return f"{where} has a forward hook (or a forward of its own)"
        a, b = _attributes(m), _attributes(e)
        changed = sorted(k for k in a.keys() | b.keys() if not _equal(a.get(k), b.get(k)))
        if changed:
            return f"{where} has other settings than the converted model's ({', '.join(changed)})"
    missing = [n for n in exacts if n not in mods]
    return f"{missing[0]} of the converted model is gone" if missing else None


def fuse_for_cpu(model: nn.Module, image_size: int) -> nn.Module:
    """A copy of `model` (batch norms folded) with fused convolutions, for CPU inference at
    `image_size`, by its family's rule (benchmark/families: `cpu_fusion`); `model` is left as it is."""
    from benchmark.families import of_module

    if any(type(m).__name__ == "TFBatchNorm2d" for m in model.modules()):
        raise ValueError("fuse_for_cpu needs the batch norms folded (fold_bn=true)")
    family = of_module(model)
    if family is None or not family.has("cpu_fusion"):
        raise ValueError(f"fuse_for_cpu: no fusion for {type(model).__name__}")
    model = static_padding(copy.deepcopy(model).cpu().eval(), image_size)
    return family.load("cpu_fusion")(model, input_sizes(model, (nn.Conv2d,), image_size))


def fuse_mobilenet_v1(model: nn.Module, sizes: dict) -> nn.Module:
    """MobileNet-v1's rule: every conv with its ReLU6, in place."""
    for name, layer in model.features.named_children():
        if not isinstance(layer, ConvBnReLU6) or not isinstance(layer.act, nn.ReLU6):
            raise ValueError(f"features.{name}: expected conv + ReLU6")
        setattr(model.features, name, FusedConv2d(layer.conv, sizes[layer.conv], "hardtanh"))
    return model


def fuse_resnet50(model: nn.Module, sizes: dict) -> nn.Module:
    """ResNet-50's rule: the stem's conv with its ReLU, each bottleneck's convs with theirs and the
    last with the shortcut's add, in place."""
    model.conv1, model.bn1 = FusedConv2d(model.conv1, sizes[model.conv1], "relu"), nn.Identity()
    model.relu = nn.Identity()  # fused into the stem's convolution
    for i in range(1, len(model.spec.layers) + 1):
        stage = getattr(model, f"layer{i}")
        for name, block in stage.named_children():
            setattr(stage, name, FusedBottleneck(block, sizes))
    return model


def fuse_graph(model: nn.Module, sizes: dict) -> nn.Module:
    """A converted graph's rule (model=graph): each convolution fused, in place, with the Relu or
    Relu6 node after it where that node alone reads it (the node then passes the sum through); a
    convolution whose input it pads itself (padding PyTorch's cannot hold) stays as it is."""
    from benchmark.nn import graph as ops

    readers = ops.readers(model.steps)
    reads = dict(model.steps)
    activation = {}  # conv key -> the Relu/Relu6 node fused into it
    for key, refs in model.steps:
        node = model.nodes[key]
        if isinstance(node, ops.Op) and node.kind in ("Relu", "Relu6") and len(refs) == 1 and refs[0][1] < 0:
            src = refs[0][0]
            # back through what passes the sum on (a batch norm folded into the convolution), each
            # read by the next alone
            while readers.get(src) == 1 and isinstance(model.nodes[src], ops.Op) and \
                    model.nodes[src].fn is ops.identity and len(reads[src]) == 1 and reads[src][0][1] < 0:
                src = reads[src][0][0]
            if isinstance(model.nodes[src], ops.Conv) and readers.get(src) == 1:
                activation[src] = key
    for key, node in list(model.nodes.items()):
        if not isinstance(node, ops.Conv) or node.pre_pad:
            continue
        act = activation.get(key)
        kind = "none" if act is None else {"Relu": "relu", "Relu6": "hardtanh"}[model.nodes[act].kind]
        node.conv = FusedConv2d(node.conv, sizes[node.conv], kind)
        if act is not None:
            model.nodes[act] = ops.Op(f"{model.nodes[act].kind} (fused into {key})", ops.identity)
    return model
