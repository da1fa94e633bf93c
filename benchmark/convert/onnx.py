"""ONNX models of MLPerf's graphs (tf2onnx's output, any opset it writes, NCHW or NHWC input) to the
same PyTorch modules and parameter names as the frozen graphs convert to, walking the data flow from
the input to the logits.

tf2onnx folds each batch norm into its convolution (or leaves a `Mul` + `Add`, or a
`BatchNormalization`, which are folded here with the harness's own arithmetic), so an ONNX model
converts to the folded form of the module (`fold_bn=true`): each convolution with its bias, no
batch-norm layers. Strides, pads, groups, classes and the input's layout and size are read from the
graph; every node must be accounted for, and anything else is an error naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.convert.mobilenet_v1 import expected_layer_name
from benchmark.formats.onnx_graph import OnnxGraph
from benchmark.nn.layers import ConvSpec, folded_conv, same_padding
from benchmark.nn.mobilenet_v1 import MobileNetV1Spec
from benchmark.nn.resnet50 import BlockSpec, ResNetSpec


def first_layer_input(g: OnnxGraph) -> tuple[str, int]:
    """The tensor the first layer reads (after the input's transpose, for an NHWC graph) and the
    input size. An NHWC input transposed to NCHW is how tf2onnx writes a graph exported without
    `--inputs-as-nchw`."""
    if len(g.inputs) != 1:
        raise g.error(None, f"expected one input, found {[i.name for i in g.inputs]}")
    inp = g.inputs[0]
    dims = [d.dim_value or None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise g.error(None, f"input '{inp.name}' has shape {dims}, expected 4 dimensions")
    users = g.users(inp.name)
    if len(users) > 1:
        raise g.error(users[1], f"input '{inp.name}' feeds {len(users)} nodes "
                                f"({', '.join(u.op_type for u in users)}), expected one")
    user = users[0] if users else None
    if user is not None and user.op_type == "Transpose":
        if list(g.attrs(user).get("perm", [])) != [0, 3, 1, 2] or dims[3] != 3:
            raise g.error(user, f"input of shape {dims} transposed by {g.attrs(user).get('perm')}: "
                                f"expected NHWC images to NCHW")
        g.claim(user)
        tensor, size = user.output[0], dims[1:3]
    elif dims[1] == 3:
        tensor, size = inp.name, dims[2:4]
    else:
        raise g.error(user, f"input '{inp.name}' of shape {dims} is neither NCHW nor NHWC RGB images")
    if size[0] is None or size[0] != size[1]:
        raise g.error(None, f"input '{inp.name}' has spatial size {size}: expected a fixed square size")
    return tensor, int(size[0])


@dataclass
class Conv:
    weight: np.ndarray  # OIHW
    bias: np.ndarray
    stride: int
    pads: tuple[int, int, int, int]  # top, bottom, left, right
    groups: int
    output: str  # after the batch norm folded into it
    node: object


def _pads(g: OnnxGraph, node, size: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    a = g.attrs(node)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        before, after = same_padding(size, kernel, stride)
        if auto == "SAME_LOWER":
            before, after = after, before
        return before, after, before, after
    if auto == "VALID":
        return 0, 0, 0, 0
    top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
    return top, bottom, left, right


def _strides(g: OnnxGraph, node) -> int:
    strides = list(g.attrs(node).get("strides", [1, 1]))
    if len(set(strides)) != 1:
        raise g.error(node, f"strides {strides} differ between height and width")
    return int(strides[0])


def conv_unit(g: OnnxGraph, tensor: str, size: int) -> Conv:
    """A Conv reading `tensor` (an explicit zero `Pad` before it merged into its pads), with the
    batch norm after it folded in: nothing, `Mul` + `Add` by constants, or `BatchNormalization`."""
    import torch

    node = g.next_op(tensor, ("Conv", "Pad"))
    extra = (0, 0, 0, 0)
    if node.op_type == "Pad":
        pads = list(g.attrs(node).get("pads", [])) or g.value(node, 1).tolist()
        mode = g.attrs(node).get("mode", b"constant")
        # the fill value: an input from opset 11, the `value` attribute before
        fill = float(g.value(node, 2)) if len(node.input) > 2 and node.input[2] else float(g.attrs(node).get("value", 0.0))
        if mode not in (b"constant", "constant") or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or fill != 0.0:
            raise g.error(node, f"only zero padding of height and width is supported, found {pads}")
        extra = (pads[2], pads[6], pads[3], pads[7])
        size += pads[2] + pads[6]
        node = g.next_op(node.output[0], "Conv")
    a = g.attrs(node)
    if list(a.get("dilations", [1, 1])) != [1, 1]:
        raise g.error(node, f"dilations {a['dilations']} are not supported")
    weight = g.value(node, 1).astype(np.float32)
    kernel = weight.shape[2]
    if weight.shape[2] != weight.shape[3]:
        raise g.error(node, f"kernel {weight.shape[2:]} is not square")
    stride = _strides(g, node)
    pads = tuple(p + e for p, e in zip(_pads(g, node, size, kernel, stride), extra))
    bias = g.value(node, 2).astype(np.float32) if len(node.input) > 2 and node.input[2] else None
    out, cout = node.output[0], weight.shape[0]
    w, b = torch.from_numpy(weight.copy()), torch.from_numpy(bias) if bias is not None else None
    users = g.users(out)
    if len(users) == 1 and users[0].op_type == "BatchNormalization":
        bn = g.claim(users[0])
        scale, beta, mean, var = (torch.from_numpy(g.value(bn, i).astype(np.float32)) for i in range(1, 5))
        w, b = folded_conv(w, b, scale, beta, mean, var, float(g.attrs(bn).get("epsilon", 1e-5)))
        out = bn.output[0]
    elif len(users) == 1 and users[0].op_type == "Mul" and _per_channel(g, users[0], cout) is not None:
        mul_node = g.claim(users[0])
        mul = torch.from_numpy(_per_channel(g, mul_node, cout))
        add = g.next_op(mul_node.output[0], "Add")
        shift = _per_channel(g, add, cout)
        if shift is None:
            raise g.error(add, "expected a per-channel constant added after the batch norm's Mul")
        w = w * mul.view(-1, 1, 1, 1)
        b = torch.from_numpy(shift) if b is None else b * mul + torch.from_numpy(shift)
        out = add.output[0]
    if b is None:
        b = torch.zeros(cout)
    return Conv(w.numpy(), b.numpy(), stride, pads, int(a.get("group", 1)), out, node)


def _per_channel(g: OnnxGraph, node, channels: int, rank: int = 4) -> np.ndarray | None:
    """The constant operand of a Mul/Add on a tensor of `rank` (NCHW, or N x C), as a vector of
    `channels`, where it is one value per channel: on NCHW shape [C, 1, 1] or [1, C, 1, 1]
    (broadcasting aligns shapes on the right, so [C], [1, C] or [1, C, 1] run along the width or
    height, whatever their size); on N x C, [C] or [1, C]."""
    target = (1, channels) + (1,) * (rank - 2)
    for i in (1, 0):
        if i < len(node.input) and node.input[i] in g.values:
            v = g.values[node.input[i]].astype(np.float32)
            if v.ndim <= rank and (1,) * (rank - v.ndim) + v.shape == target:
                return v.reshape(channels)
    return None


def activation(g: OnnxGraph, tensor: str, kind: str) -> str:
    """ReLU6 (`Clip` 0..6, min/max as attributes or inputs) or ReLU after `tensor`."""
    if kind == "relu":
        return g.next_op(tensor, "Relu").output[0]
    node = g.next_op(tensor, "Clip")
    a = g.attrs(node)
    low = a["min"] if "min" in a else float(g.value(node, 1))
    high = a["max"] if "max" in a else float(g.value(node, 2))
    if (low, high) != (0.0, 6.0):
        raise g.error(node, f"expected ReLU6 (Clip 0..6), found Clip {low}..{high}")
    return node.output[0]


def conv_spec(g: OnnxGraph, c: Conv, name: str, cin: int, size: int, depthwise: bool, tf_same: bool) -> ConvSpec:
    """The spec the frozen graph's converter gives the same layer: with `tf_same` (TF-slim's SAME
    convolutions) TF SAME padding decided at run time wherever the pads are SAME's; otherwise (TF
    official ResNet's explicit and stride-1 SAME padding) the symmetric pads themselves."""
    cout, per_group, kernel = c.weight.shape[0], c.weight.shape[1], c.weight.shape[2]
    if per_group * c.groups != cin or (depthwise and (c.groups != cin or cout != cin)):
        raise g.error(c.node, f"weights {c.weight.shape} in {c.groups} groups do not fit {cin} input channels"
                              + (" of a depthwise layer" if depthwise else ""))
    before, after = same_padding(size, kernel, c.stride)
    if tf_same and c.pads == (before, after, before, after):
        padding = None
    elif not tf_same and len(set(c.pads)) == 1:
        padding = list(c.pads)
    else:
        raise g.error(c.node, f"pads {c.pads} at input size {size} are not the "
                              f"{'TF SAME' if tf_same else 'symmetric'} padding of this model's graphs")
    return ConvSpec(name, cin, cout, kernel, c.stride, 0.0, True, depthwise, padding)


def out_size(size: int, spec: ConvSpec) -> int:
    if spec.padding is None:
        return -(-size // spec.stride)
    return (size + spec.padding[0] + spec.padding[1] - spec.kernel) // spec.stride + 1


HEAD_OPS = ("Softmax", "ArgMax", "Reshape", "Shape", "Cast", "Identity", "Squeeze", "Flatten")


def classifier_head(g: OnnxGraph, logits: str) -> None:
    """What reads the logits: MLPerf's heads (Softmax, ArgMax), with the shape bookkeeping tf2onnx
    writes around them (a Reshape back to the logits' Shape), ending in graph outputs."""
    seen, todo, heads = set(), [logits], 0
    while todo:
        tensor = todo.pop()
        users = g.users(tensor)
        if not users and tensor != logits and tensor not in g.outputs:
            raise g.error(None, f"head tensor '{tensor}' leads nowhere")
        for node in users:
            if id(node) in seen:
                continue
            if node.op_type not in HEAD_OPS:
                raise g.error(node, f"expected only {', '.join(HEAD_OPS)} after the logits")
            seen.add(id(node))
            heads += node.op_type in ("Softmax", "ArgMax")
            todo.extend(node.output)
            g.claim(node)
    if not heads:
        raise g.error(None, f"no Softmax or ArgMax reads the logits '{logits}'")


def _flatten(g: OnnxGraph, tensor: str, channels: int) -> str:
    """Squeeze of the 1x1 spatial axes, Flatten, or a Reshape to [N, C] (or [N, C, 1, 1], a no-op)."""
    node = g.next_op(tensor, ("Squeeze", "Flatten", "Reshape"))
    if node.op_type == "Squeeze":
        axes = g.attrs(node).get("axes")
        axes = list(axes) if axes is not None else g.value(node, 1).tolist()
        if sorted(axes) != [2, 3]:
            raise g.error(node, f"squeezes axes {axes}, expected [2, 3]")
    elif node.op_type == "Reshape":
        shape = g.value(node, 1).tolist()
        if len(shape) not in (2, 4) or shape[1] not in (channels, -1) or any(s != 1 for s in shape[2:]):
            raise g.error(node, f"reshapes to {shape}, expected [N, {channels}] or [N, {channels}, 1, 1]")
    return node.output[0]


def convert_mobilenet_v1_onnx(g: OnnxGraph) -> tuple[MobileNetV1Spec, dict[str, np.ndarray]]:
    x, image_size = first_layer_input(g)
    layers, state, taps = [], {}, []
    size, cin = image_size, 3
    while (user := next(iter(g.users(x)), None)) is not None and user.op_type in ("Conv", "Pad"):
        index = len(layers)
        name = expected_layer_name(index)
        c = conv_unit(g, x, size)
        spec = conv_spec(g, c, name, cin, size, depthwise=name.endswith("depthwise"), tf_same=True)
        act = activation(g, c.output, "relu6")
        prefix = f"features.{name.lower()}."
        state[prefix + "conv.weight"], state[prefix + "conv.bias"] = c.weight, c.bias
        taps += [[prefix + "conv", c.output], [prefix + "act", act]]
        layers.append(spec)
        size, cin, x = out_size(size, spec), spec.cout, act
    if not layers:
        raise g.error(user, "no convolution layers at the input")
    pool = g.next_op(x, "AveragePool")
    a = g.attrs(pool)
    if any(a.get("pads", [0])) or a.get("count_include_pad", 0) not in (0,):
        raise g.error(pool, f"expected a VALID average pool, found pads {a.get('pads')}")
    kernel, stride = a["kernel_shape"], _strides(g, pool)
    if kernel[0] != kernel[1]:
        raise g.error(pool, f"pool kernel {kernel} is not square")
    x = pool.output[0]
    if (user := next(iter(g.users(x)), None)) is not None and user.op_type == "Reshape":
        x = _flatten(g, x, cin)  # a no-op reshape tf2onnx writes before the classifier
    logits = g.next_op(x, "Conv")
    weight, bias = g.value(logits, 1).astype(np.float32), g.value(logits, 2).astype(np.float32)
    if weight.shape[1:] != (cin, 1, 1):
        raise g.error(logits, f"classifier weights {weight.shape} are not a 1x1 conv over {cin} channels")
    out = _flatten(g, logits.output[0], weight.shape[0])
    classifier_head(g, out)
    g.check_all_claimed()
    state["classifier.weight"], state["classifier.bias"] = weight, bias
    taps += [["pool", pool.output[0]], ["classifier", logits.output[0]], ["", out]]
    spec = MobileNetV1Spec(layers, int(kernel[0]), stride, int(weight.shape[0]), image_size, taps, folded=True)
    return spec, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def convert_resnet50_onnx(g: OnnxGraph) -> tuple[ResNetSpec, dict[str, np.ndarray]]:
    x, image_size = first_layer_input(g)
    state, taps = {}, []
    stem, x, size = resnet_unit(g, None, x, image_size, 3, "conv1", "bn1", state, taps)
    x = activation(g, x, "relu")
    pool = g.next_op(x, "MaxPool")
    a = g.attrs(pool)
    if len(set(a["kernel_shape"])) != 1 or set(a.get("dilations", [1])) != {1} or a.get("ceil_mode", 0):
        raise g.error(pool, f"max pool kernel {list(a['kernel_shape'])}, dilations {list(a.get('dilations', [1, 1]))}, "
                            f"ceil_mode {a.get('ceil_mode', 0)}: expected a square kernel, no dilation, floor mode")
    kernel, stride = a["kernel_shape"][0], _strides(g, pool)
    before, after = same_padding(size, kernel, stride)
    if _pads(g, pool, size, kernel, stride) != (before, after, before, after):
        raise g.error(pool, f"max pool pads {g.attrs(pool).get('pads')} are not TF SAME at size {size}")
    x, size, cin = pool.output[0], -(-size // stride), stem.cout
    stages: list[list[BlockSpec]] = []
    while True:
        users = g.users(x)
        convs = [u for u in users if u.op_type in ("Conv", "Pad")]
        if not convs:
            break
        project = len(convs) == 2
        if project:
            stages.append([])
        if not stages:
            raise g.error(convs[0], "the first block after the stem has no projection shortcut")
        block = f"layer{len(stages)}.{len(stages[-1])}"
        # conv1 is the one followed by a ReLU; the projection's output goes to the Add
        order = sorted(convs, key=lambda n: _leads_to_relu(g, n))
        down = None
        if project:
            down, shortcut, _ = resnet_unit(g, order[0], x, size, cin, f"{block}.downsample.0",
                                            f"{block}.downsample", state, taps)
        conv1, h, s1 = resnet_unit(g, order[-1], x, size, cin, f"{block}.conv1", f"{block}.bn1", state, taps)
        h = activation(g, h, "relu")
        conv2, h, s2 = resnet_unit(g, None, h, s1, conv1.cout, f"{block}.conv2", f"{block}.bn2", state, taps)
        h = activation(g, h, "relu")
        conv3, h, _ = resnet_unit(g, None, h, s2, conv2.cout, f"{block}.conv3", f"{block}.bn3", state, taps)
        add = g.next_op(h, "Add")
        other = [i for i in add.input if i != h]
        if other != [shortcut if project else x]:
            raise g.error(add, "the residual Add does not join the block's shortcut")
        x = activation(g, add.output[0], "relu")
        taps.append([block, x])
        stages[-1].append(BlockSpec(conv1, conv2, conv3, down))
        size, cin = s2, conv3.cout
    if not stages:
        raise g.error(None, "no bottleneck blocks after the stem")
    mean = g.next_op(x, ("GlobalAveragePool", "ReduceMean"))
    if mean.op_type == "ReduceMean" and sorted(g.attrs(mean).get("axes", [])) != [2, 3]:
        raise g.error(mean, f"reduces axes {g.attrs(mean).get('axes')}, expected [2, 3]")
    x = mean.output[0]
    if mean.op_type == "GlobalAveragePool" or g.attrs(mean).get("keepdims", 1):
        x = _flatten(g, x, cin)
    dense = g.next_op(x, ("MatMul", "Gemm"))
    if dense.op_type == "MatMul":
        weight = g.value(dense, 1).astype(np.float32).T
        add = g.next_op(dense.output[0], "Add")
        bias = _per_channel(g, add, weight.shape[0], rank=2)
        logits = add.output[0]
    else:
        a = g.attrs(dense)
        weight = g.value(dense, 1).astype(np.float32)
        weight = weight if a.get("transB", 0) else weight.T
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise g.error(dense, "expected a plain Gemm (no transA, alpha = beta = 1)")
        bias, logits = g.value(dense, 2).astype(np.float32).reshape(-1), dense.output[0]
    if weight.shape[1] != cin or bias is None or bias.shape != (weight.shape[0],):
        raise g.error(dense, f"dense layer {weight.shape} with bias does not read {cin} features")
    classifier_head(g, logits)
    g.check_all_claimed()
    state["fc.weight"], state["fc.bias"] = weight, bias
    taps.append(["fc", logits])
    spec = ResNetSpec(stem, kernel, stride, stages, int(weight.shape[0]), image_size, taps, folded=True)
    return spec, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def _leads_to_relu(g: OnnxGraph, node) -> bool:
    """Whether a conv's (batch-normed) output goes to a ReLU (a block's conv1) rather than to the
    residual Add (its projection)."""
    out = node.output[0]
    for _ in range(4):  # Conv -> BatchNormalization | Mul -> Add of a constant
        users = g.users(out)
        if len(users) != 1:
            return False
        user = users[0]
        if user.op_type == "Relu":
            return True
        constant_add = user.op_type == "Add" and any(i in g.values for i in user.input)
        if user.op_type not in ("Conv", "BatchNormalization", "Mul") and not constant_add:
            return False
        out = user.output[0]
    return False


def resnet_unit(g: OnnxGraph, node, tensor: str, size: int, cin: int, prefix: str, tap: str, state: dict,
                taps: list):
    """One conv unit (the stem, conv1..3 of a block, or its projection) as torchvision names its
    parameters; `node`: which of the tensor's consumers, where it feeds several."""
    c = conv_unit(g, tensor, size) if node is None else _conv_from(g, node, tensor, size)
    spec = conv_spec(g, c, prefix, cin, size, depthwise=False, tf_same=False)
    state[prefix + ".weight"], state[prefix + ".bias"] = c.weight, c.bias
    taps.append([tap, c.output])
    return spec, c.output, out_size(size, spec)


def _conv_from(g, node, tensor, size):
    """conv_unit for one particular consumer of a tensor that feeds several."""
    saved = g.consumers[tensor]
    g.consumers[tensor] = [node]
    try:
        return conv_unit(g, tensor, size)
    finally:
        g.consumers[tensor] = saved

