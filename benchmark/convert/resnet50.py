"""TF official ResNet-50 v1.5 frozen graph (MLPerf's `resnet50_v1.pb`) to `ResNet50`.

The structure is read off the data flow: which conv feeds which add tells the projection shortcut
from the main path, whatever the nodes are called. The TF names are then checked against TF
official ResNet's creation-order numbering (projection conv first in each stage), so a graph whose
names disagree with its own wiring fails loudly instead of converting into something else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from benchmark.convert.tf_ops import (
    ADD,
    BatchNormMatch,
    ConvMatch,
    check_layout,
    claim_head,
    match_batchnorm,
    match_conv,
    spatial,
)
from benchmark.formats.frozen_graph import FrozenGraph, graph_input
from benchmark.nn.layers import ConvSpec
from benchmark.nn.resnet50 import BlockSpec, ResNetSpec

SPATIAL = {"NHWC": (1, 2), "NCHW": (2, 3)}
CONV_NAME = re.compile(r"^resnet_model/conv2d(_\d+)?/kernel$")


@dataclass
class Unit:
    """One [Pad ->] Conv2D -> batch norm of the graph, with its weights in PyTorch layout."""
    spec: ConvSpec
    conv: ConvMatch
    bn: BatchNormMatch

    def assign(self, state: dict, conv_key: str, bn_key: str) -> None:
        for key in (conv_key + "weight", bn_key + "weight"):
            if key in state:
                raise ValueError(f"parameter {key} assigned twice")  # a converter bug, not the graph's
        state[conv_key + "weight"] = self.conv.weight.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        state.update({bn_key + "weight": self.bn.gamma, bn_key + "bias": self.bn.beta,
                      bn_key + "running_mean": self.bn.mean, bn_key + "running_var": self.bn.var})


def _conv_unit(g: FrozenGraph, op, layout: str, cin: int) -> Unit:
    padding = None
    if op.op == "Pad":
        g.expect_op(op, "Pad")
        pads = g.const(op, 1)
        h, w = SPATIAL[layout]
        others = [i for i in range(4) if i not in (h, w)]
        if pads.shape != (4, 2) or pads[others].any():
            raise g.error(op, f"paddings {pads.tolist()} pad more than the spatial dims of {layout}")
        padding = [int(pads[h, 0]), int(pads[h, 1]), int(pads[w, 0]), int(pads[w, 1])]
        op = g.next_op(op)
    conv = match_conv(g, op, ("Conv2D",), layout)
    k, _, w_in, cout = conv.weight.shape
    if w_in != cin:
        raise g.error(op, f"kernel expects {w_in} input channels, the layer before gives {cin}")
    if padding is not None and conv.padding != "VALID":
        raise g.error(op, f"{conv.padding} conv after an explicit Pad is not supported")
    if padding is None:
        if conv.padding == "VALID":
            padding = [0, 0, 0, 0]
        elif conv.stride == 1 and k % 2:
            padding = [(k - 1) // 2] * 4  # SAME at stride 1 is symmetric at every input size
    bn = match_batchnorm(g, op, layout)
    scope = conv.weight_name.rsplit("/", 1)[0]
    return Unit(ConvSpec(scope, cin, cout, k, conv.stride, bn.eps, bn.folded, padding=padding), conv, bn)


def _check_numbering(g: FrozenGraph, units: list) -> None:
    """TF official ResNet's numbering: conv2d, conv2d_1, ... in creation order, batch_normalization_k
    with conv2d_k. Checked only where the graph uses that naming scheme."""
    if not all(CONV_NAME.match(u.conv.weight_name) for u in units):
        return
    for k, unit in enumerate(units):
        conv, bn = unit.conv, unit.bn
        suffix = f"_{k}" if k else ""
        expected = f"resnet_model/conv2d{suffix}/kernel"
        if conv.weight_name != expected:
            raise g.error(conv.node, f"wired as conv {k} in creation order (projection first in each "
                                     f"stage) but reads '{conv.weight_name}', expected '{expected}'")
        if not bn.names["gamma"].startswith(f"resnet_model/batch_normalization{suffix}/"):
            raise g.error(bn.output, f"batch norm of {expected} reads '{bn.names['gamma']}'")


def convert_resnet50(g: FrozenGraph) -> tuple[ResNetSpec, dict[str, np.ndarray]]:
    x, image_size = graph_input(g)
    layout, node = "NHWC", x
    first = g.next_op(x)
    if first.op == "Transpose":  # channels_first export: NHWC input transposed to NCHW inside
        perm = g.const(first, 1)
        if perm.tolist() != [0, 3, 1, 2]:
            raise g.error(first, f"input transpose {perm.tolist()} is not NHWC -> NCHW")
        layout, node = "NCHW", g.expect_op(first, "Transpose")
        first = g.next_op(node)

    state: dict[str, np.ndarray] = {}
    stem = _conv_unit(g, first, layout, 3)
    stem.assign(state, "conv1.", "bn1.")
    units = [stem]  # in TF creation order, for the numbering check
    taps = [["conv1", stem.conv.node.name + ":0"], ["bn1", stem.bn.output.name + ":0"]]
    relu = g.expect_op(g.next_op(stem.bn.output), "Relu")
    pool = g.expect_op(g.next_op(relu), "MaxPool")
    check_layout(g, pool, layout)
    if g.attr(pool, "padding") != "SAME":
        raise g.error(pool, f"expected the SAME max pool of TF official ResNet, found {g.attr(pool, 'padding')}")
    pool_kernel, pool_stride = spatial(g, pool, "ksize", layout), spatial(g, pool, "strides", layout)
    taps.append(["maxpool", pool.name + ":0"])

    stages: list[list[BlockSpec]] = []
    node, cin = pool, stem.spec.cout
    while True:
        users = g.users(node)
        if len(users) == 1 and users[0].op == "Mean":
            break
        if len(users) != 2:
            raise g.error(node, f"expected a bottleneck block (two consumers) or the final Mean, "
                                f"found {len(users)}: {', '.join(u.name for u in users)}")
        projection = None
        if any(u.op in ADD for u in users):  # identity shortcut: the block input feeds the add
            first_unit = _conv_unit(g, next(u for u in users if u.op not in ADD), layout, cin)
            shortcut = node
        else:  # projection shortcut: the unit whose batch norm feeds the add directly
            a, b = (_conv_unit(g, u, layout, cin) for u in users)
            a_add, b_add = (g.next_op(u.bn.output).op in ADD for u in (a, b))
            if a_add == b_add:
                raise g.error(node, "cannot tell the projection shortcut from the main path")
            projection, first_unit = (a, b) if a_add else (b, a)
            shortcut = projection.bn.output
        if projection is not None or not stages:  # a projection block starts a stage
            stages.append([])
        prefix = f"layer{len(stages)}.{len(stages[-1])}."
        main = [first_unit]
        for _ in range(2):
            act = g.expect_op(g.next_op(main[-1].bn.output), "Relu")
            main.append(_conv_unit(g, g.next_op(act), layout, main[-1].spec.cout))
        for i, unit in enumerate(main, 1):
            unit.assign(state, f"{prefix}conv{i}.", f"{prefix}bn{i}.")
        if projection is not None:
            projection.assign(state, prefix + "downsample.0.", prefix + "downsample.1.")
            taps += [[prefix + "downsample.0", projection.conv.node.name + ":0"],
                     [prefix + "downsample.1", projection.bn.output.name + ":0"]]
        for i, unit in enumerate(main, 1):
            taps += [[f"{prefix}conv{i}", unit.conv.node.name + ":0"], [f"{prefix}bn{i}", unit.bn.output.name + ":0"]]
        units += ([projection] if projection else []) + main
        add = g.expect_op(g.next_op(main[-1].bn.output), ADD)
        added = {g.producer(add, 0).name, g.producer(add, 1).name}
        if added != {main[-1].bn.output.name, shortcut.name}:
            raise g.error(add, f"adds {sorted(added)}, expected the block's output and its shortcut")
        cout = main[-1].spec.cout
        if (projection.spec.cout if projection else cin) != cout:
            raise g.error(add, f"shortcut channels do not match the block's {cout}")
        stages[-1].append(BlockSpec(*(u.spec for u in main), projection.spec if projection else None))
        node, cin = g.expect_op(g.next_op(add), "Relu"), cout
        taps.append([prefix.rstrip("."), node.name + ":0"])  # the block: add, then ReLU

    mean = g.expect_op(users[0], "Mean")
    axes = sorted(int(a) for a in np.atleast_1d(g.const(mean, 1)))
    if axes != list(SPATIAL[layout]):
        raise g.error(mean, f"mean over axes {axes}, expected the spatial axes of {layout}")
    head = g.next_op(mean)
    if head.op in ("Squeeze", "Reshape"):
        g.expect_op(head, head.op)
        if head.op == "Reshape":
            g.const(head, 1)
        head = g.next_op(head)
    matmul = g.expect_op(head, "MatMul")
    if g.attr(matmul, "transpose_a") or g.attr(matmul, "transpose_b"):
        raise g.error(matmul, "transposed dense layer is not supported")
    kernel = g.const(matmul, 1)
    bias_add = g.expect_op(g.next_op(matmul), "BiasAdd")
    bias = g.const(bias_add, 1)
    if kernel.shape[0] != cin or bias.shape != (kernel.shape[1],):
        raise g.error(matmul, f"dense kernel {kernel.shape} and bias {bias.shape} do not fit {cin} features")
    claim_head(g, bias_add, allowed=("ArgMax", "Softmax", "Cast", "Reshape", "Shape"))
    _check_numbering(g, units)
    g.check_all_claimed()

    taps.append(["fc", bias_add.name + ":0"])
    state["fc.weight"] = kernel.T
    state["fc.bias"] = bias
    spec = ResNetSpec(stem.spec, pool_kernel, pool_stride, stages, int(kernel.shape[1]), image_size, taps)
    return spec, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
