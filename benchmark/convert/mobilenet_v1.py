"""TF-slim MobileNet-v1 frozen graph (2017 or 2018 form, any depth multiplier and input size)
to `MobileNetV1`, walking the graph's data flow from the input to the logits."""

from __future__ import annotations

import numpy as np

from benchmark.convert.tf_ops import check_layout, claim_head, match_batchnorm, match_conv, spatial
from benchmark.formats.frozen_graph import FrozenGraph, graph_input
from benchmark.nn.layers import ConvSpec
from benchmark.nn.mobilenet_v1 import MobileNetV1Spec

SCOPE = "MobilenetV1/"


def expected_layer_name(index: int) -> str:
    if index == 0:
        return "Conv2d_0"
    return f"Conv2d_{(index + 1) // 2}_{'depthwise' if index % 2 else 'pointwise'}"


def convert_mobilenet_v1(g: FrozenGraph) -> tuple[MobileNetV1Spec, dict[str, np.ndarray]]:
    x, image_size = graph_input(g)
    layers: list[ConvSpec] = []
    state: dict[str, np.ndarray] = {}
    taps: list[list[str]] = []  # which TF tensor each PyTorch module's output should equal
    node, cin = x, 3
    while (op := g.next_op(node)).op != "AvgPool":
        index = len(layers)
        conv = match_conv(g, op)
        depthwise = op.op == "DepthwiseConv2dNative"
        name = expected_layer_name(index)
        scope = SCOPE + name + "/"
        if not conv.weight_name.startswith(scope) or depthwise != name.endswith("depthwise"):
            raise g.error(op, f"layer {index} should be {SCOPE}{name}, found {op.op} on weights "
                              f"'{conv.weight_name}'")
        if conv.padding != "SAME":
            raise g.error(op, f"TF-slim MobileNet convs are SAME, found {conv.padding}")
        k, _, w_in, w_out = conv.weight.shape
        if w_in != cin:
            raise g.error(op, f"kernel expects {w_in} input channels, the layer before gives {cin}")
        if depthwise:
            if w_out != 1:
                raise g.error(op, f"depthwise channel multiplier {w_out} is not supported")
            cout, weight = cin, conv.weight.transpose(2, 3, 0, 1)  # [k,k,C,1] -> [C,1,k,k]
        else:
            cout, weight = w_out, conv.weight.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        bn = match_batchnorm(g, op)
        for param, tf_name in bn.names.items():
            if not tf_name.startswith(scope + "BatchNorm/"):
                raise g.error(bn.output, f"batch norm {param} '{tf_name}' is not in {scope}BatchNorm")
        act = g.expect_op(g.next_op(bn.output), "Relu6")
        prefix = f"features.{name.lower()}."
        taps += [[prefix + "conv", op.name + ":0"], [prefix + "bn", bn.output.name + ":0"],
                 [prefix + "act", act.name + ":0"]]
        state[prefix + "conv.weight"] = weight
        state.update({prefix + "bn.weight": bn.gamma, prefix + "bn.bias": bn.beta,
                      prefix + "bn.running_mean": bn.mean, prefix + "bn.running_var": bn.var})
        layers.append(ConvSpec(name, cin, cout, k, conv.stride, bn.eps, bn.folded, depthwise))
        node, cin = act, cout

    if not layers:
        raise g.error(op, "no convolution layers before the average pool")
    pool = g.expect_op(op, "AvgPool")
    check_layout(g, pool)
    if g.attr(pool, "padding") != "VALID":
        raise g.error(pool, f"expected VALID padding, found {g.attr(pool, 'padding')}")
    pool_kernel, pool_stride = spatial(g, pool, "ksize"), spatial(g, pool, "strides")

    logits = match_conv(g, g.next_op(pool), ("Conv2D",))
    if not logits.weight_name.startswith(SCOPE + "Logits/Conv2d_1c_1x1/"):
        raise g.error(logits.node, f"expected the Logits/Conv2d_1c_1x1 classifier, found "
                                   f"weights '{logits.weight_name}'")
    if logits.weight.shape[:3] != (1, 1, cin) or logits.stride != 1:
        raise g.error(logits.node, f"classifier kernel {logits.weight.shape} stride {logits.stride} "
                                   f"is not a 1x1 conv over {cin} channels")
    bias_add = g.expect_op(g.next_op(logits.node), "BiasAdd")
    check_layout(g, bias_add)
    bias = g.const(bias_add, 1)
    num_classes = logits.weight.shape[3]
    if bias.shape != (num_classes,):
        raise g.error(bias_add, f"bias of shape {bias.shape} for {num_classes} classes")
    squeeze = g.expect_op(g.next_op(bias_add), "Squeeze")
    if sorted(g.attr(squeeze, "squeeze_dims")) != [1, 2]:
        raise g.error(squeeze, f"squeeze_dims {g.attr(squeeze, 'squeeze_dims')} are not [1, 2]")
    claim_head(g, squeeze)
    g.check_all_claimed()

    taps += [["pool", pool.name + ":0"], ["classifier", bias_add.name + ":0"], ["", squeeze.name + ":0"]]
    state["classifier.weight"] = logits.weight.transpose(3, 2, 0, 1)
    state["classifier.bias"] = bias
    spec = MobileNetV1Spec(layers, pool_kernel, pool_stride, num_classes, image_size, taps)
    return spec, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
