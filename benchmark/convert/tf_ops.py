"""Matchers for the TF op patterns that converters meet: conv, batch norm (fused and unfused).

Each matcher claims the nodes it reads, reads weights through `FrozenGraph.const`, and raises a
`GraphError` naming the node when the graph holds something else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.formats.frozen_graph import FrozenGraph

FUSED_BN = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
ADD = ("Add", "AddV2")


@dataclass
class ConvMatch:
    node: object
    weight: np.ndarray  # TF layout: HWIO, or [kh, kw, C, multiplier] for depthwise
    weight_name: str
    stride: int
    padding: str


@dataclass
class BatchNormMatch:
    output: object  # the node whose output is the normalised tensor
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float
    folded: bool  # x * mul + (beta - mean * mul), rather than (x - mean) * mul + beta
    names: dict  # parameter -> TF Const name


def spatial(g: FrozenGraph, node, key: str, layout: str = "NHWC") -> int:
    """s from a square per-dimension attribute: [1, s, s, 1] (NHWC) or [1, 1, s, s] (NCHW)."""
    values = g.attr(node, key)
    h, w = (1, 2) if layout == "NHWC" else (2, 3)
    ones = [i for i in range(4) if i not in (h, w)]
    if len(values) != 4 or any(values[i] != 1 for i in ones) or values[h] != values[w]:
        raise g.error(node, f"{key} {values} is not a square {layout} window")
    return values[h]


def check_layout(g: FrozenGraph, node, layout: str = "NHWC") -> None:
    fmt = g.attr(node, "data_format") if "data_format" in node.attr else "NHWC"
    if fmt != layout:
        raise g.error(node, f"data_format {fmt} where the graph's layout is {layout}")


def match_conv(g: FrozenGraph, node, ops=("Conv2D", "DepthwiseConv2dNative"), layout="NHWC") -> ConvMatch:
    g.expect_op(node, ops)
    check_layout(g, node, layout)
    if "dilations" in node.attr and set(g.attr(node, "dilations")) != {1}:
        raise g.error(node, f"dilations {g.attr(node, 'dilations')} are not supported")
    stride = spatial(g, node, "strides", layout)
    padding = g.attr(node, "padding")
    if padding not in ("SAME", "VALID"):
        raise g.error(node, f"padding {padding} is not supported")
    weight = g.const(node, 1)
    if weight.ndim != 4 or weight.shape[0] != weight.shape[1]:
        raise g.error(node, f"kernel of shape {weight.shape} is not [k, k, in, out]")
    return ConvMatch(node, weight, g.producer(node, 1).name, stride, padding)


def match_batchnorm(g: FrozenGraph, x_node, layout: str = "NHWC") -> BatchNormMatch:
    """The batch norm applied to `x_node`'s output: a FusedBatchNorm op, or TF-slim's unfused
    arithmetic `x * mul + (beta - mean * mul)`, `mul = rsqrt(var + eps) * gamma`."""
    node = g.next_op(x_node)
    if node.op in FUSED_BN:
        return _match_fused(g, node, layout)
    if node.op == "Mul":
        return _match_unfused(g, x_node, node)
    raise g.error(node, f"expected a batch norm after '{x_node.name}', found {node.op}")


def _match_fused(g: FrozenGraph, node, layout: str) -> BatchNormMatch:
    g.expect_op(node, FUSED_BN)
    check_layout(g, node, layout)
    if g.attr(node, "is_training"):
        raise g.error(node, "batch norm in training mode (is_training=true) in a frozen graph")
    names = {k: g.producer(node, i).name for i, k in enumerate(("gamma", "beta", "mean", "var"), 1)}
    gamma, beta, mean, var = (g.const(node, i) for i in range(1, 5))
    # TF's fused kernel computes (x - mean) * (gamma * rsqrt(var + eps)) + beta.
    return BatchNormMatch(node, gamma, beta, mean, var, float(g.attr(node, "epsilon")), False, names)


def _match_unfused(g: FrozenGraph, x_node, mul_x) -> BatchNormMatch:
    g.expect_op(mul_x, "Mul")
    if g.producer(mul_x, 0) is not x_node:
        raise g.error(mul_x, f"expected '{x_node.name}' as first input of the batch norm multiply")
    mul = g.expect_op(g.producer(mul_x, 1), "Mul")
    rsqrt = g.expect_op(g.producer(mul, 0), "Rsqrt")
    var_add = g.expect_op(g.producer(rsqrt, 0), ADD)
    var, eps = g.const(var_add, 0), g.const(var_add, 1)
    if eps.size != 1:
        raise g.error(var_add, f"expected a scalar epsilon, found shape {eps.shape}")
    gamma = g.const(mul, 1)
    out = g.expect_op(g.next_op(mul_x), ADD)
    sub = g.expect_op(g.producer(out, 1), "Sub")
    beta = g.const(sub, 0)
    mul_mean = g.expect_op(g.producer(sub, 1), "Mul")
    mean = g.const(mul_mean, 0)
    if g.producer(mul_mean, 1) is not mul:
        raise g.error(mul_mean, f"expected the mean to be scaled by '{mul.name}'")
    names = {"gamma": g.producer(mul, 1).name, "beta": g.producer(sub, 0).name,
             "mean": g.producer(mul_mean, 0).name, "var": g.producer(var_add, 0).name}
    return BatchNormMatch(out, gamma, beta, mean, var, float(eps.reshape(())), True, names)


def claim_head(g: FrozenGraph, node, allowed=("Squeeze", "Reshape", "Softmax", "Shape", "ArgMax")):
    """Account for the weight-free ops after the logits (reshapes, softmax, argmax)."""
    for user in g.consumers.get(node.name, []):
        if user.op in FrozenGraph.PASS_THROUGH:
            g.claimed.add(user.name)
        else:
            g.expect_op(user, allowed)
            for i in range(1, sum(not i.startswith("^") for i in user.input)):
                if g.producer(user, i).op == "Const":  # shape or axis operands
                    g.const(user, i)
        claim_head(g, user, allowed)
