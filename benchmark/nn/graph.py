"""A TensorFlow graph as a PyTorch module, node by node: each TF op as a small module computing what
TF computes, in TF's order of arithmetic, and `GraphModule` running them in the graph's order.

Layout: every rank-4 value between nodes is held NCHW (PyTorch's convolutions and pools want it);
the graph's NHWC meaning is kept by each op: a layout-aware op maps its axes, any other op sees its
inputs in TF's layout (`to_tf`) and hands rank-4 results back (`from_tf`). A lower-rank operand of
an element-wise op with a rank-4 one broadcasts as TF broadcasts it (against the trailing axes of
NHWC).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.nn.layers import (Conv2dSame, FixedAtSize, ceil_mode_is_same, runs_own_code, same_padding,
                                 static_padding)
from preprocessing.errors import ConfigError

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
TF_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}  # an NHWC axis -> the NCHW dim holding it


def to_tf(x):
    """A value in TF's layout (rank 4: NHWC; a view)."""
    return x.permute(*NCHW_TO_NHWC) if isinstance(x, torch.Tensor) and x.dim() == 4 else x


def from_tf(x):
    """A value in the module's layout (rank 4: NCHW; a view)."""
    return x.permute(*NHWC_TO_NCHW) if isinstance(x, torch.Tensor) and x.dim() == 4 else x


def broadcast_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Operands of an element-wise op: a lower-rank one beside a rank-4 (NCHW) one is aligned with
    NHWC's trailing axes, as TF broadcasts, then laid out NCHW (a scalar too: oneDNN Graph's compiler
    refuses a 0-dimensional operand)."""
    def lift(x: torch.Tensor) -> torch.Tensor:
        return x.reshape((1,) * (4 - x.dim()) + tuple(x.shape)).permute(*NHWC_TO_NCHW)
    if a.dim() == 4 and b.dim() < 4:
        return a, lift(b)
    if b.dim() == 4 and a.dim() < 4:
        return lift(a), b
    return a, b


class Const(nn.Module):
    """A constant of the graph, as a buffer (rank 4: NCHW)."""

    def __init__(self, value: torch.Tensor, tf_layout: bool = True):
        super().__init__()
        self.register_buffer("value", (from_tf(value) if tf_layout else value).contiguous())

    def forward(self) -> torch.Tensor:
        return self.value


class Op(nn.Module):
    """A parameter-free op: `fn` of its inputs, in the module's layout."""

    def __init__(self, kind: str, fn, **attrs):
        super().__init__()
        self.kind, self.fn, self.attrs = kind, fn, attrs

    def forward(self, *xs):
        return self.fn(*xs, **self.attrs)

    def extra_repr(self) -> str:
        return self.kind + "".join(f", {k}={v}" for k, v in self.attrs.items())


def _binary(fn):
    def run(a, b):
        return fn(*broadcast_pair(a, b))
    return run


BINARY = {"Add": torch.add, "AddV2": torch.add, "Sub": torch.sub, "Mul": torch.mul, "RealDiv": torch.div,
          "Maximum": torch.maximum, "Minimum": torch.minimum,
          "SquaredDifference": lambda a, b: torch.square(a - b)}
UNARY = {"Relu": torch.relu, "Relu6": lambda x: torch.clamp(x, 0.0, 6.0), "Sigmoid": torch.sigmoid,
         "Tanh": torch.tanh, "Rsqrt": torch.rsqrt, "Sqrt": torch.sqrt, "Neg": torch.neg, "Exp": torch.exp,
         "Square": torch.square, "Erf": torch.erf, "Erfc": torch.special.erfc, "Abs": torch.abs,
         "Log": torch.log, "Reciprocal": torch.reciprocal, "Floor": torch.floor}


BINARY_FNS = {kind: _binary(fn) for kind, fn in BINARY.items()}


def binary(kind: str) -> Op:
    return Op(kind, BINARY_FNS[kind])


def unary(kind: str) -> Op:
    return Op(kind, UNARY[kind])


def readers(steps) -> dict[str, int]:
    """How many steps read each node's output."""
    count: dict[str, int] = {}
    for _, refs in steps:
        for src, _ in refs:
            count[src] = count.get(src, 0) + 1
    return count


def identity(*xs):
    return xs[0] if len(xs) == 1 else xs


class Conv(nn.Module):
    """Conv2D and DepthwiseConv2dNative (NHWC): SAME (the odd pixel after), VALID or explicit padding,
    strides, dilations, groups. `weight`: the TF filter, HWIO ([kh, kw, C, multiplier] for depthwise).

    Explicit padding (`explicit`: TF's 8 numbers, or a Pad before the convolution taken in) is held
    in the convolution, fixed at conversion: even padding as PyTorch's own, one more pixel after as
    Conv2dSame does (a leading zero tap in the filter and the larger padding both sides: TF's windows,
    each reading one zero more), anything else by padding the input first."""

    def __init__(self, weight: torch.Tensor, strides, dilations, padding: str, explicit=(), depthwise=False,
                 groups: int = 1):
        super().__init__()
        kh, kw, cin, cout = weight.shape
        if depthwise:  # output channel c * multiplier + m reads input channel c
            w = weight.reshape(kh, kw, cin * cout).permute(2, 0, 1).unsqueeze(1)
            groups, cout = cin, cin * cout
        else:
            w = weight.permute(3, 2, 0, 1)
            cout = w.shape[0]
        self.padding, self.explicit = padding, tuple(explicit)
        cls = Conv2dSame if padding == "SAME" else nn.Conv2d
        self.conv = cls(w.shape[1] * groups, cout, (kh, kw), stride=tuple(strides), dilation=tuple(dilations),
                        groups=groups, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(w)
        self.pre_pad = ()  # (left, right, top, bottom) the input is padded by first, where the conv cannot
        if padding == "EXPLICIT":
            (top, bottom), (left, right) = self.explicit[2:4], self.explicit[4:6]
            self.set_padding(top, bottom, left, right)

    def set_padding(self, top: int, bottom: int, left: int, right: int) -> None:
        conv = self.conv
        if (top, left) != (bottom, right) and conv.dilation == (1, 1) and 0 <= bottom - top <= 1 \
                and 0 <= right - left <= 1:
            with torch.no_grad():
                conv.weight = nn.Parameter(F.pad(conv.weight, (right - left, 0, bottom - top, 0)), requires_grad=False)
            conv.kernel_size = tuple(conv.weight.shape[2:])
            top, left = bottom, right
        if (top, left) == (bottom, right):
            conv.padding, self.pre_pad = (top, left), ()
        else:
            conv.padding, self.pre_pad = (0, 0), (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_group = self.conv.weight.shape[1]
        if x.shape[1] != per_group * self.conv.groups:  # a grouped Conv2D: the filter holds C / groups inputs
            if x.shape[1] % per_group:
                raise ValueError(f"a convolution's filter takes {per_group} channels, the input has {x.shape[1]}")
            self.conv.groups, self.conv.in_channels = x.shape[1] // per_group, x.shape[1]
        if self.pre_pad:
            x = F.pad(x, self.pre_pad)
        return self.conv(x)


class BiasAdd(nn.Module):
    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("bias", bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.bias[:, None, None] if x.dim() == 4 else self.bias)


class Dense(nn.Module):
    """MatMul by a constant matrix (TF: [in, out]), with the BiasAdd after it where the converter
    joins them (`bias`): one F.linear, as a compiled CPU model wants it (oneDNN Graph refuses a
    product followed by a separate bias add). The bias is then added inside the product's
    accumulation, not after its rounding: the logits move in their last float32 digit or two."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("weight", weight.t().contiguous())  # [out, in], F.linear's
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class FusedBatchNorm(nn.Module):
    """FusedBatchNorm(V2, V3) at inference: `x * mul + (beta - mean * mul)`, `mul = gamma * rsqrt(var + eps)`,
    TF's CPU kernel's order (`TFBatchNorm2d(folded=True)`)."""

    def __init__(self, gamma, beta, mean, var, eps: float):
        super().__init__()
        self.eps = float(eps)
        for name, value in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)):
            self.register_buffer(name, value.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mul = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * mul
        return x * mul[:, None, None] + shift[:, None, None]


class Pool(FixedAtSize):
    """MaxPool and AvgPool (NHWC windows): SAME pads max with -inf and averages over the real pixels
    only (TF's count), VALID takes whole windows. A SAME pool runs as the fixed pool of its input's
    size (`fixed`), made once per size."""

    def __init__(self, kind: str, ksize, strides, padding: str):
        super().__init__()
        self.kind, self.ksize, self.strides, self.padding = kind, tuple(ksize), tuple(strides), padding
        self._fixed: dict[tuple, nn.Module] = {}  # (height, width, device) -> its pool; made from the attributes

    def fixed(self, height: int, width: int) -> nn.Module:
        k, s = self.ksize, self.strides
        if self.padding != "SAME":
            return nn.MaxPool2d(k, s) if self.kind == "MaxPool" else nn.AvgPool2d(k, s)
        (top, bottom), (left, right) = same_padding(height, k[0], s[0]), same_padding(width, k[1], s[1])
        if ceil_mode_is_same(height, k[0], s[0], top) and ceil_mode_is_same(width, k[1], s[1], left):
            # the padding before as PyTorch's own, the rest as ceil_mode's partial last window:
            # TF's windows, an average over the real pixels alone, and no padded copy of the input
            if self.kind == "MaxPool":
                return nn.MaxPool2d(k, s, (top, left), ceil_mode=True)
            return nn.AvgPool2d(k, s, (top, left), ceil_mode=True, count_include_pad=False)
        return PaddedPool(self.kind, k, s, (left, right, top, bottom), height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (int(x.shape[-2]), int(x.shape[-1]), x.device)
        if key not in self._fixed:
            self._fixed[key] = self.fixed(*key[:2]).to(x.device)
        return self._fixed[key](x)

    def extra_repr(self) -> str:
        return f"{self.kind}, ksize={self.ksize}, strides={self.strides}, padding={self.padding}"


class PaddedPool(nn.Module):
    """A SAME pool whose windows PyTorch's own padding cannot take: the input padded (-inf for max,
    zeros for an average), the average's sum divided by the real pixels of each window."""

    def __init__(self, kind: str, ksize, strides, pads: tuple[int, int, int, int], height: int, width: int):
        super().__init__()
        self.kind, self.ksize, self.strides, self.pads = kind, tuple(ksize), tuple(strides), tuple(pads)
        ones = F.pad(torch.ones(1, 1, height, width), self.pads)
        self.register_buffer("counts", F.avg_pool2d(ones, self.ksize, self.strides, divisor_override=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "MaxPool":
            return F.max_pool2d(F.pad(x, self.pads, value=float("-inf")), self.ksize, self.strides)
        total = F.avg_pool2d(F.pad(x, self.pads), self.ksize, self.strides, divisor_override=1)
        return total / self.counts


def mat_mul(a, b, transpose_a=False, transpose_b=False):
    return torch.matmul(a.t() if transpose_a else a, b.t() if transpose_b else b)


def mean(x, axes, keep_dims=False):
    axes = [int(a) % x.dim() for a in axes.reshape(-1).tolist()]
    if x.dim() == 4 and keep_dims:
        return torch.mean(x, dim=[TF_AXIS[a] for a in axes], keepdim=True)
    return from_tf(torch.mean(to_tf(x), dim=axes, keepdim=keep_dims))


def pad(x, paddings, value=0.0):
    p = paddings.reshape(-1, 2).tolist()
    if x.dim() == 4:  # NHWC pairs -> F.pad's order for NCHW: W, H, C, N
        order = [p[2], p[1], p[3], p[0]]
    else:
        order = p[::-1]
    return F.pad(x, [int(v) for pair in order for v in pair], value=float(value))


def concat(*xs):
    *values, axis = xs
    axis = int(axis) % values[0].dim()
    return torch.cat(values, dim=TF_AXIS[axis] if values[0].dim() == 4 else axis)


def reshape(x, shape):
    return from_tf(torch.reshape(to_tf(x), [int(v) for v in shape.reshape(-1).tolist()]))


def squeeze(x, squeeze_dims=()):
    y = to_tf(x)
    dims = [int(d) % y.dim() for d in squeeze_dims] or [i for i, n in enumerate(y.shape) if n == 1]
    for d in sorted(dims, reverse=True):
        y = y.squeeze(d)
    return from_tf(y)


def expand_dims(x, axis):
    y = to_tf(x)
    a = int(axis)
    return from_tf(y.unsqueeze(a if a >= 0 else y.dim() + 1 + a))


def transpose(x, perm):
    return from_tf(to_tf(x).permute(*[int(v) for v in perm.reshape(-1).tolist()]))


def shape(x, out_type=torch.int32):
    return torch.tensor(list(to_tf(x).shape), dtype=out_type)


def pack(*xs, axis=0):
    return from_tf(torch.stack([to_tf(x) if isinstance(x, torch.Tensor) else torch.tensor(x) for x in xs], dim=axis))


def strided_slice(x, begin, end, strides, begin_mask=0, end_mask=0, shrink_axis_mask=0):
    y = to_tf(x)
    index = []
    for i, (b, e, s) in enumerate(zip(begin.tolist(), end.tolist(), strides.tolist())):
        if shrink_axis_mask >> i & 1:
            index.append(int(b))
            continue
        index.append(slice(None if begin_mask >> i & 1 else int(b), None if end_mask >> i & 1 else int(e), int(s)))
    return from_tf(y[tuple(index)])


def softmax(x):
    return from_tf(torch.softmax(to_tf(x), dim=-1))


def cast(x, dtype):
    return x.to(dtype)


# Every function an Op may run, by name: what an exported model's spec names (no code is stored).
FUNCTIONS = {"identity": identity, "mat_mul": mat_mul, "mean": mean, "pad": pad, "concat": concat, "reshape": reshape,
             "squeeze": squeeze, "expand_dims": expand_dims, "transpose": transpose, "shape": shape, "pack": pack,
             "strided_slice": strided_slice, "softmax": softmax, "cast": cast,
             **{f"binary:{k}": f for k, f in BINARY_FNS.items()}, **{f"unary:{k}": f for k, f in UNARY.items()}}
FUNCTION_NAMES = {id(f): name for name, f in FUNCTIONS.items()}


def _value(v):
    """An Op's attribute as JSON (a dtype by its name)."""
    return {"dtype": str(v).removeprefix("torch.")} if isinstance(v, torch.dtype) else v


def _attribute(v):
    return getattr(torch, v["dtype"]) if isinstance(v, dict) and set(v) == {"dtype"} else v


def node_config(m: nn.Module) -> dict:
    """What rebuilds node module `m` with its tensors zeroed (`node_from_config`): its class, settings
    and tensor shapes; the tensors themselves are the state dict's."""
    if isinstance(m, Const):
        return {"type": "Const", "shape": list(m.value.shape), "dtype": str(m.value.dtype).removeprefix("torch.")}
    if isinstance(m, Op) and id(m.fn) in FUNCTION_NAMES:
        return {"type": "Op", "kind": m.kind, "fn": FUNCTION_NAMES[id(m.fn)],
                "attrs": {k: _value(v) for k, v in m.attrs.items()}}
    if isinstance(m, Conv):
        c = m.conv
        return {"type": "Conv", "weight": list(c.weight.shape), "bias": c.bias is not None, "stride": list(c.stride),
                "dilation": list(c.dilation), "groups": c.groups, "same": isinstance(c, Conv2dSame),
                "conv_padding": list(c.padding), "padding": m.padding, "explicit": list(m.explicit),
                "pre_pad": list(m.pre_pad)}
    if isinstance(m, BiasAdd):
        return {"type": "BiasAdd", "channels": m.bias.numel()}
    if isinstance(m, Dense):
        return {"type": "Dense", "weight": list(m.weight.shape), "bias": m.bias is not None}
    if isinstance(m, FusedBatchNorm):
        return {"type": "FusedBatchNorm", "channels": m.weight.numel(), "eps": m.eps}
    if isinstance(m, Pool):
        return {"type": "Pool", "kind": m.kind, "ksize": list(m.ksize), "strides": list(m.strides), "padding": m.padding}
    return {"type": None, "class": type(m).__name__}  # not the converter's: no spec rebuilds it


def node_from_config(c: dict) -> nn.Module:
    kind = c["type"]
    if kind == "Const":
        return Const(torch.zeros(c["shape"], dtype=getattr(torch, c["dtype"])), tf_layout=False)
    if kind == "Op":
        return Op(c["kind"], FUNCTIONS[c["fn"]], **{k: _attribute(v) for k, v in c["attrs"].items()})
    if kind == "Conv":
        m = Conv.__new__(Conv)
        nn.Module.__init__(m)
        m.padding, m.explicit, m.pre_pad = c["padding"], tuple(c["explicit"]), tuple(c["pre_pad"])
        out, per_group, kh, kw = c["weight"]
        args = dict(stride=tuple(c["stride"]), dilation=tuple(c["dilation"]), groups=c["groups"], bias=c["bias"])
        m.conv = (Conv2dSame(per_group * c["groups"], out, (kh, kw), **args) if c["same"] else
                  nn.Conv2d(per_group * c["groups"], out, (kh, kw), padding=tuple(c["conv_padding"]), **args))
        return m
    if kind == "BiasAdd":
        return BiasAdd(torch.zeros(c["channels"]))
    if kind == "Dense":
        out, inp = c["weight"]
        return Dense(torch.zeros(inp, out), torch.zeros(out) if c["bias"] else None)
    if kind == "FusedBatchNorm":
        zeros = torch.zeros(c["channels"])
        return FusedBatchNorm(zeros, zeros, zeros, zeros, c["eps"])
    if kind == "Pool":
        return Pool(c["kind"], c["ksize"], c["strides"], c["padding"])
    raise ValueError(f"unknown node type {kind!r} in a graph spec")


@dataclass(frozen=True)
class GraphSpec:
    """A converted graph as data: its input size, placeholder, output, and per node (in the graph's
    order) its module key, TF name, inputs and module config. With the state dict it rebuilds the
    module (`GraphModule.from_spec`): what benchmark.export writes, no pickled code."""
    image_size: int | None  # the graph's input size, where it fixes one
    input_name: str = ""
    output: tuple = ()
    nodes: tuple = ()

    def to_dict(self) -> dict:
        foreign = [n for n in self.nodes if n["module"]["type"] is None]
        if foreign:
            raise ValueError(f"node {foreign[0]['name']} runs a {foreign[0]['module']['class']} of no spec (a "
                             f"module of the user's own?): the model cannot be written as data")
        return {"image_size": self.image_size, "input_name": self.input_name, "output": list(self.output),
                "nodes": list(self.nodes)}

    @classmethod
    def from_dict(cls, d: dict) -> "GraphSpec":
        return cls(d["image_size"], d["input_name"], tuple(d["output"]), tuple(d["nodes"]))


class GraphModule(nn.Module):
    """The graph's nodes run in its order: `nodes` (one module per TF node, named after it) and
    `steps`, each node's inputs as (node, output index). `input_name`: the placeholder (fed NCHW);
    `output`: the tensor returned (the logits)."""

    def __init__(self, nodes: dict[str, nn.Module], steps: list[tuple[str, list[tuple[str, int]]]],
                 input_name: str, output: tuple[str, int], names: dict[str, str], image_size: int | None = None):
        super().__init__()
        self.image_size = image_size
        self.nodes = nn.ModuleDict(nodes)
        self.steps = steps
        self.input_name, self.output = input_name, output
        self.names = names  # module key -> TF node name
        last = {}
        for i, (_, inputs) in enumerate(steps):
            for name, _ in inputs:
                last[name] = i
        last[output[0]] = len(steps)
        # what can be dropped after each step: no value outlives its last reader
        self.free = [[name for name, at in last.items() if at == i] for i in range(len(steps))]

    @property
    def spec(self) -> GraphSpec:
        return GraphSpec(self.image_size, self.input_name, tuple(self.output), tuple(
            {"key": key, "name": self.names[key], "inputs": [list(r) for r in refs],
             "module": node_config(self.nodes[key])} for key, refs in self.steps))

    @classmethod
    def from_spec(cls, spec: GraphSpec) -> "GraphModule":
        """The module `spec` describes, its tensors zeroed (the state dict fills them)."""
        return cls({n["key"]: node_from_config(n["module"]) for n in spec.nodes},
                   [(n["key"], [tuple(r) for r in n["inputs"]]) for n in spec.nodes], spec.input_name,
                   tuple(spec.output), {n["key"]: n["name"] for n in spec.nodes}, spec.image_size)

    SHAPES = ("Shape", "StridedSlice", "Pack", "Cast")  # integers about a tensor, no value to compare

    def taps(self, output_tensor: str) -> list[tuple[str, str]]:
        """(module path, TF tensor) of every node whose value depends on the image and is computed by
        it, in the graph's order (a pass-through: an Identity, a Softmax left out, a BiasAdd joined to
        its Dense, has none of its own), then ("", `output_tensor`): what `benchmark.compare` pairs
        with the graph's own tensors in TensorFlow."""
        depends, out = {self.input_name}, []
        for key, inputs in self.steps:
            if any(src in depends for src, _ in inputs):
                depends.add(key)
                module = self.nodes[key]
                if not (isinstance(module, Op) and (module.fn is identity or module.kind in self.SHAPES)):
                    out.append((f"nodes.{key}", f"{self.names[key]}:0"))
        return [*out, ("", output_tensor)]

    def classifier_split(self) -> tuple["GraphModule", "GraphModule"] | None:
        """(features, head), `head(features(x))` computing what the module computes, bit for bit:
        the head is the last product by a constant matrix (the classifier) and what follows it,
        reading nothing else of the image. None where the graph ends otherwise. A compiled CPU model
        runs the head outside its partitions (nn/onednn_graph.py says why)."""
        at = max((i for i, (key, _) in enumerate(self.steps) if type(self.nodes[key]) is Dense), default=None)
        if at is None or len(self.steps[at][1]) != 1 or self.steps[at][1][0][1] >= 0:
            return None
        source = self.steps[at][1][0][0]
        constant = {key for key, refs in self.steps if not refs}
        tail, inside = [], {self.steps[at][0]}
        for key, refs in self.steps[at + 1:]:
            if refs and not all(src in inside or src in constant for src, _ in refs):
                return None  # the tail reads another value of the image: not a head of its own
            if refs:
                tail.append((key, refs))
                inside.add(key)
        if self.output[0] not in inside:
            return None
        read = {src for _, refs in [self.steps[at], *tail] for src, _ in refs}
        head_steps = [(key, refs) for key, refs in self.steps if key in constant and key in read]
        head_steps += [self.steps[at], *tail]
        features = GraphModule({k: self.nodes[k] for k, _ in self.steps[:at]}, self.steps[:at], self.input_name,
                               (source, -1), {k: self.names[k] for k, _ in self.steps[:at]}, self.image_size)
        head = GraphModule({k: self.nodes[k] for k, _ in head_steps}, head_steps, source, self.output,
                           {k: self.names[k] for k, _ in head_steps}, self.image_size)
        return features.eval(), head.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input_name: x}
        for i, (name, inputs) in enumerate(self.steps):
            args = [env[src] if index < 0 else env[src][index] for src, index in inputs]
            env[name] = self.nodes[name](*args)
            for done in self.free[i]:
                env.pop(done, None)
        value = env[self.output[0]]
        value = value if self.output[1] < 0 else value[self.output[1]]
        # logits of more than two dimensions (a 1x1 convolution's [N, 1, 1, classes]): flattened in
        # TF's layout, as the TF runtime flattens the graph's own tensor
        return to_tf(value).reshape(len(value), -1) if value.dim() > 2 else value


def _lifted(x: torch.Tensor) -> torch.Tensor:
    """A lower-rank operand of an element-wise op beside a rank-4 one, laid out as broadcast_pair lays it."""
    return x.reshape((1,) * (4 - x.dim()) + tuple(x.shape)).permute(*NHWC_TO_NCHW)


def _flattened(x: torch.Tensor) -> torch.Tensor:
    return to_tf(x).reshape(len(x), -1)


LEAVES = (Op, BiasAdd, FusedBatchNorm, PaddedPool)  # run as they are in the flat form: not traced into


def flat(module: GraphModule, image_size: int) -> tuple[torch.fx.GraphModule, tuple[type, ...]]:
    """`module` (left as it is) as one torch.fx graph for `image_size` images: padding fixed for that
    size, each convolution, product and activation a node of its own (nn.Conv2d, nn.Linear, nn.ReLU,
    nn.ReLU6, torch.add, ...) in the forms PyTorch's quantizer fuses and observes, each element-wise
    operand broadcast as the module broadcasts it; any other op a call of its node module. Returns the
    graph and the module classes a tracer must call without tracing into (their code reads the
    values and shapes of their inputs). Computes what `module` computes, bit for bit. Node modules are
    laid out by their exact class: a subclass is called whole, and a module with a hook (a user's
    transform) is refused, since the layout would not run it."""
    hooked = [name or "the model" for name, sub in module.named_modules() if runs_own_code(sub)]
    if hooked:
        raise ConfigError(f"{hooked[0]} has a forward hook (or a forward of its own): the graph's FX form "
                          f"(precision=int8) would not run it")
    m = static_padding(copy.deepcopy(module).cpu().eval(), image_size)
    ranks: dict[str, object] = {module.input_name: 4}  # each output's rank (a tuple: a multi-output identity's)
    env = {m.input_name: torch.zeros(1, 3, image_size, image_size)}
    with torch.no_grad():  # one pass: a grouped convolution learns its groups, every rank is known
        for key, refs in m.steps:
            value = m.nodes[key](*[env[s] if i < 0 else env[s][i] for s, i in refs])
            env[key] = value
            ranks[key] = tuple(v.dim() for v in value) if isinstance(value, tuple) else value.dim()
    graph = torch.fx.Graph()
    nodes = {m.input_name: graph.placeholder("x")}
    for key, refs in m.steps:
        node_module = m.nodes[key]
        args = [nodes[s] if i < 0 else nodes[s][i] for s, i in refs]
        arg_ranks = [ranks[s] if i < 0 else ranks[s][i] for s, i in refs]
        target = f"nodes.{key}"
        if type(node_module) is Const:
            nodes[key] = graph.get_attr(f"{target}.value")
        elif type(node_module) is Op and node_module.fn is identity:
            nodes[key] = args[0] if len(args) == 1 else tuple(args)
        elif type(node_module) is Op and node_module.kind in ("Relu", "Relu6"):
            m.nodes[key] = nn.ReLU() if node_module.kind == "Relu" else nn.ReLU6()
            nodes[key] = graph.call_module(target, tuple(args))
        elif type(node_module) is Op and node_module.kind in UNARY:
            nodes[key] = graph.call_function(UNARY[node_module.kind], tuple(args))
        elif type(node_module) is Op and node_module.kind in BINARY:
            if 4 in arg_ranks and min(arg_ranks) < 4:
                args = [a if r == 4 else graph.call_function(_lifted, (a,)) for a, r in zip(args, arg_ranks)]
            nodes[key] = graph.call_function(BINARY[node_module.kind], tuple(args))
        elif type(node_module) is Conv:
            x = args[0]
            if node_module.pre_pad:
                x = graph.call_function(F.pad, (x, node_module.pre_pad))
            nodes[key] = graph.call_module(f"{target}.conv", (x,))
        elif type(node_module) is Dense:
            linear = nn.Linear(node_module.weight.shape[1], node_module.weight.shape[0], node_module.bias is not None)
            with torch.no_grad():
                linear.weight.copy_(node_module.weight)
                if node_module.bias is not None:
                    linear.bias.copy_(node_module.bias)
            m.nodes[key] = linear
            nodes[key] = graph.call_module(target, tuple(args))
        else:  # a fixed pool (nn.MaxPool2d, nn.AvgPool2d), a leaf or a subclass: called as it is
            nodes[key] = graph.call_module(target, tuple(args))
    key, index = m.output
    out = nodes[key] if index < 0 else nodes[key][index]
    rank = ranks[key] if index < 0 else ranks[key][index]
    graph.output(graph.call_function(_flattened, (out,)) if rank > 2 else out)
    fx = torch.fx.GraphModule(m, graph)
    fx.delete_all_unused_submodules()
    return fx.eval(), LEAVES
