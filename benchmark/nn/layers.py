"""Small building blocks that compute what TensorFlow's ops compute."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) for one spatial dim; the odd pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """nn.Conv2d with TF 'SAME' padding worked out from the input size at run time.

    TF puts the odd padding pixel after (e.g. (0, 1) on a stride-2 conv over an even size), which
    PyTorch's symmetric `padding` cannot express. Rather than copying the input into a padded one,
    the kernel gets a leading zero row (column) and both sides the larger padding: its windows are
    TF's, one tap earlier, and that tap weighs zero. Copying the input had taken a quarter of
    MobileNet-v1's CPU time; its logits on CPU came out the same bit for bit. Inputs are finite
    (0 * x is 0).
    """

    def __init__(self, *args, **kwargs):
        kwargs.pop("padding", None)
        super().__init__(*args, padding=0, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = same_padding(x.shape[-2], kh, sh, dh)
        left, right = same_padding(x.shape[-1], kw, sw, dw)
        weight = self.weight
        if (top, left) != (bottom, right):
            if (dh, dw) == (1, 1):
                weight = F.pad(weight, (right - left, 0, bottom - top, 0))  # after - before is 0 or 1
                top, left = bottom, right
            else:  # a dilated kernel would need `dilation` zero taps; pad the input instead
                x = F.pad(x, (left, right, top, bottom))
                top = left = 0
        return F.conv2d(x, weight, self.bias, self.stride, (top, left), self.dilation, self.groups)


class TFBatchNorm2d(nn.Module):
    """Inference batch norm with the graph's epsilon and the graph's order of arithmetic.

    `folded=True` computes `x * mul + (beta - mean * mul)` with `mul = gamma * rsqrt(var + eps)`, as
    TF-slim's unfused batch norm and TF's folded kernels do; `folded=False` computes
    `(x - mean) * mul + beta`. The last digits of the logits depend on matching the graph here.
    """

    def __init__(self, num_features: int, eps: float, folded: bool = True):
        super().__init__()
        self.eps = float(eps)
        self.folded = folded
        for name, init in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((num_features,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mul = self.weight * torch.rsqrt(self.running_var + self.eps)
        # One new tensor, then in place: the same arithmetic as out-of-place, less memory traffic.
        if self.folded:
            shift = self.bias - self.running_mean * mul
            return (x * mul[:, None, None]).add_(shift[:, None, None])
        return (x - self.running_mean[:, None, None]).mul_(mul[:, None, None]).add_(self.bias[:, None, None])

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}, folded={self.folded}"


def folded_conv(weight: torch.Tensor, bias: torch.Tensor | None, gamma: torch.Tensor, beta: torch.Tensor,
                mean: torch.Tensor, var: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv (weight, bias or None) followed by a batch norm, as one conv, in float32 with the
    batch norm's own multiplier `mul = gamma * rsqrt(var + eps)`: W * mul, beta + (b - mean) * mul."""
    mul = gamma * torch.rsqrt(var + eps)
    return weight * mul.view(-1, 1, 1, 1), beta - mean * mul if bias is None else beta + (bias - mean) * mul


@torch.no_grad()
def fold_batch_norm(conv: nn.Conv2d, bn: TFBatchNorm2d) -> None:
    """Scale `conv`'s filters by the batch norm's multiplier and give it the batch norm's shift as
    bias: conv(x, W * mul) + shift."""
    weight, bias = folded_conv(conv.weight, None, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
    conv.weight.copy_(weight)
    conv.bias = nn.Parameter(bias, requires_grad=False)


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every TFBatchNorm2d into the conv registered just before it in the same module, and
    replace it with Identity: one pass over memory per layer instead of three.

    This is the folding TensorFlow's graph optimiser applies to TF-slim's batch norms; it moves
    logits at the last float32 digits, as much as TensorFlow's own optimised and unoptimised runs
    of one graph differ (results/benchmarks.md reports agreement with TF for both paths).
    """
    for parent in model.modules():
        children = list(parent.named_children())
        for (_, conv), (name, bn) in zip(children, children[1:]):
            if isinstance(bn, TFBatchNorm2d):
                if not isinstance(conv, nn.Conv2d) or conv.bias is not None:
                    raise ValueError(f"batch norm {name} does not follow a bias-free conv in {type(parent).__name__}")
                fold_batch_norm(conv, bn)
                setattr(parent, name, nn.Identity())
    if any(isinstance(m, TFBatchNorm2d) for m in model.modules()):
        raise ValueError("a batch norm is left unfolded (it does not follow a conv in its module)")
    return model


def ceil_mode_is_same(size: int, kernel: int, stride: int, before: int) -> bool:
    """Whether max_pool2d(padding=before, ceil_mode=True) takes the windows of TF SAME: the same
    start, and PyTorch's output size (its formula) equal to TF's ceil(size / stride)."""
    if before > kernel // 2 or size + 2 * before < kernel:
        return False
    out = -(-(size + 2 * before - kernel) // stride) + 1
    if (out - 1) * stride >= size + before:  # PyTorch drops a window that starts in the padding
        out -= 1
    return out == -(-size // stride)


class FixedAtSize(nn.Module):
    """A layer whose padding follows its input's size (TF SAME): `fixed(height, width)` is the
    layer with the padding of that size fixed, what `static_padding` puts in its place."""

    def fixed(self, height: int, width: int) -> nn.Module:
        raise NotImplementedError


class MaxPool2dSame(nn.Module):
    """TF max pool with 'SAME' padding: pads with -inf, the odd pixel after (0, 1 at 112 -> 56)."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel, self.stride
        (top, bottom), (left, right) = (same_padding(n, k, s) for n in x.shape[-2:])
        if ceil_mode_is_same(x.shape[-2], k, s, top) and ceil_mode_is_same(x.shape[-1], k, s, left):
            # The padding before as PyTorch's own, the rest as ceil_mode's partial last window: TF's
            # windows, without a padded copy of the input (1.6 % of ResNet-50's time).
            return F.max_pool2d(x, k, s, padding=(top, left), ceil_mode=True)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, k, s)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding=SAME"


@dataclass
class ConvSpec:
    """One conv + batch norm of a graph, as the converter read it."""
    name: str  # the TF layer (weight scope) it came from
    cin: int
    cout: int
    kernel: int
    stride: int
    eps: float
    folded_bn: bool
    depthwise: bool = False
    padding: list[int] | None = None  # explicit (top, bottom, left, right); None: TF SAME at run time


def make_conv(spec: ConvSpec) -> nn.Conv2d:
    groups = spec.cin if spec.depthwise else 1
    if spec.padding is None:
        return Conv2dSame(spec.cin, spec.cout, spec.kernel, spec.stride, groups=groups, bias=False)
    top, bottom, left, right = spec.padding
    if top != bottom or left != right:
        raise ValueError(f"{spec.name}: asymmetric explicit padding {spec.padding} is not supported")
    return nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, padding=(top, left), groups=groups,
                     bias=False)


def make_bn(spec: ConvSpec) -> TFBatchNorm2d:
    return TFBatchNorm2d(spec.cout, spec.eps, spec.folded_bn)


class ConvBnReLU6(nn.Sequential):
    """TF-slim's conv2d / separable_conv2d layer: SAME conv without bias, batch norm, ReLU6."""

    def __init__(self, spec: ConvSpec):
        super().__init__()
        self.conv = make_conv(spec)
        self.bn = make_bn(spec)
        self.act = nn.ReLU6(inplace=True)


@torch.no_grad()
def input_sizes(model: nn.Module, kinds: tuple[type, ...], image_size: int,
                channels: int = 3) -> dict[nn.Module, tuple[int, int]]:
    """The input height and width of every module of `kinds` in `model` when it runs on images of
    `image_size` (one forward pass of zeros)."""
    device = next(iter([*model.parameters(), *model.buffers()]), torch.zeros(0)).device
    sizes: dict[nn.Module, tuple[int, int]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.__setitem__(m, tuple(i[0].shape[-2:])))
             for m in model.modules() if isinstance(m, kinds)]
    try:
        model(torch.zeros(1, channels, image_size, image_size, device=device))
    finally:
        for h in hooks:
            h.remove()
    return sizes


def runs_own_code(m: nn.Module) -> bool:
    """Whether calling `m` runs more than its class's forward: a forward hook or pre-hook (its own or
    a global one), or a forward set on the instance. A module rebuilt from its weights would lose it."""
    from torch.nn.modules import module as nn_module

    return bool(m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m)
                or nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks)


@torch.no_grad()
def static_padding(model: nn.Module, image_size: int, channels: int = 3) -> nn.Module:
    """Replace every TF-SAME conv and pool of `model` by a plain PyTorch one with the padding that
    SAME gives at `image_size`, in place: the same kernels on the same windows (a conv keeps its
    zero tap, now in its weight), for exporters that need padding fixed ahead of the input.
    Only the harness's own layers are replaced: a subclass (its own forward) or a layer with a hook
    (a user's transform) stays as it is, so what it computes is kept; a tracer records it as it runs."""
    kinds = {Conv2dSame: _static_conv, MaxPool2dSame: _static_pool}
    sizes = input_sizes(model, (*kinds, FixedAtSize), image_size, channels)
    for parent in list(model.modules()):
        for name, m in list(parent.named_children()):
            if m not in sizes or runs_own_code(m):  # not run on the image (or run with a user's code)
                continue
            if type(m) in kinds:
                setattr(parent, name, kinds[type(m)](m, *sizes[m]))
            elif isinstance(m, FixedAtSize):
                setattr(parent, name, m.fixed(*sizes[m]))
    return model


def _static_conv(conv: Conv2dSame, height: int, width: int) -> nn.Conv2d:
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    (top, bottom), (left, right) = same_padding(height, kh, sh, dh), same_padding(width, kw, sw, dw)
    weight = conv.weight
    if (top, left) != (bottom, right):
        if (dh, dw) != (1, 1):
            raise ValueError("static_padding: a dilated conv with odd SAME padding is not supported")
        weight = F.pad(weight, (right - left, 0, bottom - top, 0))  # Conv2dSame.forward's zero tap
        top, left = bottom, right
    out = nn.Conv2d(conv.in_channels, conv.out_channels, tuple(weight.shape[-2:]), conv.stride, (top, left),
                    conv.dilation, conv.groups, bias=conv.bias is not None).to(weight.device)
    out.weight.copy_(weight)
    if conv.bias is not None:
        out.bias.copy_(conv.bias)
    return out


def _static_pool(pool: MaxPool2dSame, height: int, width: int) -> nn.Module:
    k, s = pool.kernel, pool.stride
    (top, bottom), (left, right) = same_padding(height, k, s), same_padding(width, k, s)
    if ceil_mode_is_same(height, k, s, top) and ceil_mode_is_same(width, k, s, left):
        return nn.MaxPool2d(k, s, (top, left), ceil_mode=True)
    return nn.Sequential(nn.ConstantPad2d((left, right, top, bottom), float("-inf")), nn.MaxPool2d(k, s))


def random_weights(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter of `model` drawn from a seeded normal scaled by its fan-in, in eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (1.0 / max(p[0].numel(), 1)) ** 0.5)
    return model.eval()
