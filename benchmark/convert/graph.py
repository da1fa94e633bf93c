"""Any TF classifier's frozen graph -> a PyTorch module, node by node (nn/graph.py's GraphModule).

Graph-driven: the nodes the output reads, in the graph's order, each converted to the op module that
computes what TF computes, named after its node; weights are read where an op takes them (a
convolution's filter, a bias, a fused batch norm's statistics). The whole graph is checked before
anything is built: every op type it needs and the converter lacks is listed with one node of each.
A trailing Softmax (Keras classifiers end in one) or ArgMax is not part of the logits: the module
returns the tensor before it, and `Conversion.notes` says so.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from benchmark.formats.frozen_graph import FrozenGraph, GraphError
from benchmark.formats.graph_proto import TensorError, tensor_value
from benchmark.nn import graph as ops

PASS = {"Identity", "Snapshot", "StopGradient"}
SHAPE_ONLY = PASS | {"Reshape", "Squeeze", "ExpandDims"}  # what may follow the logits up to the output
FUSED_BN = {"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"}
MULTI_OUTPUT = {"IdentityN"}
TF_DTYPES = {1: torch.float32, 2: torch.float64, 3: torch.int32, 9: torch.int64, 10: torch.bool, 19: torch.float16,
             14: torch.bfloat16}
GENERIC = {  # op -> (function of nn/graph.py, its attributes: TF name -> keyword)
    "MatMul": (ops.mat_mul, {"transpose_a": "transpose_a", "transpose_b": "transpose_b"}),
    "Mean": (ops.mean, {"keep_dims": "keep_dims"}),
    "Pad": (ops.pad, {}), "PadV2": (ops.pad, {}),
    "ConcatV2": (ops.concat, {}),
    "Reshape": (ops.reshape, {}),
    "Squeeze": (ops.squeeze, {"squeeze_dims": "squeeze_dims"}),
    "ExpandDims": (ops.expand_dims, {}),
    "Transpose": (ops.transpose, {}),
    "Shape": (ops.shape, {}),
    "Pack": (ops.pack, {"axis": "axis"}),
    "StridedSlice": (ops.strided_slice, {"begin_mask": "begin_mask", "end_mask": "end_mask",
                                         "shrink_axis_mask": "shrink_axis_mask"}),
    "Softmax": (ops.softmax, {}),
    "Cast": (ops.cast, {}),
}
SUPPORTED = {"Placeholder", "Const", "Conv2D", "DepthwiseConv2dNative", "BiasAdd", "MaxPool", "AvgPool",
             *PASS, *MULTI_OUTPUT, *FUSED_BN, *ops.BINARY, *ops.UNARY, *GENERIC}


@dataclass
class Conversion:
    module: ops.GraphModule
    input: str  # the placeholder fed the image
    output: str  # the tensor returned: the logits
    image_size: int | None  # the placeholder's, where the graph fixes it
    left_out: str | None = None  # the trailing Softmax the module leaves out (its input: the logits)
    notes: list[str] = field(default_factory=list)  # what the conversion decided for the user to know


def _ref(name: str) -> tuple[str, int]:
    node, _, index = name.lstrip("^").partition(":")
    return node, int(index or 0)


def _data_inputs(node) -> list[str]:
    return [i for i in node.input if not i.startswith("^")]


def _key(name: str) -> str:
    return name.replace(".", "_")  # a module's name holds no dot


def final_op(g: FrozenGraph):
    """The one node whose output no op reads (control-only nodes and constants aside)."""
    read = {_ref(i)[0] for n in g.graph_def.node for i in _data_inputs(n)}
    ends = [n for n in g.graph_def.node if n.name not in read and n.op not in ("NoOp", "Const", "Placeholder")]
    if len(ends) != 1:
        raise GraphError(f"{g.source}: {len(ends)} final ops ({', '.join(n.name for n in ends[:5])}): name the "
                         f"logits with model.logits_tensor=")
    return ends[0]


def logits_of(g: FrozenGraph, output: str) -> tuple[str, str | None, list[str]]:
    """The tensor to score: `output`, or the scores before a trailing ArgMax; and a Softmax between
    them and the output through shape-only ops, which the module leaves out (its logits, not its
    probabilities, are compared and scored)."""
    notes = []
    node = g.node(output)
    while node.op in PASS and _data_inputs(node):
        node = g.node(_data_inputs(node)[0])
    if node.op == "ArgMax":
        output = _data_inputs(node)[0]
        notes.append(f"the graph ends in ArgMax ({node.name}): its input {output} is scored")
        node = g.node(output)
    walk = node
    while walk.op in SHAPE_ONLY and _data_inputs(walk):
        walk = g.node(_data_inputs(walk)[0])
    if walk.op == "Softmax":
        notes.append(f"the Softmax {walk.name} is left out: the tensor before it (the logits) is scored and compared")
        return output, walk.name, notes
    return output, None, notes


def the_placeholder(g: FrozenGraph) -> str:
    """The graph's one placeholder (the image input); more or none: named by the config."""
    placeholders = g.placeholders()
    if len(placeholders) != 1:
        raise GraphError(f"{g.source}: {len(placeholders)} placeholders "
                         f"({', '.join(p.name for p in placeholders[:5])}): name the image input with "
                         f"model.input_tensor=")
    return placeholders[0].name


def graph_tensors(g: FrozenGraph, input_tensor: str | None = None, logits_tensor: str | None = None) -> tuple[str, str]:
    """The input and logits tensors (name:index) of a classifier's graph: those given, else its one
    placeholder and the tensor before its final op's trailing Softmax (or ArgMax)."""
    input_tensor = input_tensor or the_placeholder(g)
    output, softmax, _ = logits_of(g, logits_tensor or final_op(g).name)
    logits = _data_inputs(g.node(softmax))[0] if softmax else output
    return (input_tensor if ":" in input_tensor else f"{input_tensor}:0",
            logits if ":" in logits else f"{logits}:0")


def const_value(g: FrozenGraph, name: str) -> np.ndarray | None:
    """The value of the constant `name` names (through Identity-like nodes), or None if computed."""
    node = g.node(name)
    while node.op in PASS:
        node = g.node(_data_inputs(node)[0])
    if node.op != "Const":
        return None
    try:
        return tensor_value(node.attr["value"].tensor)
    except TensorError as e:
        raise g.error(node, f"constant not readable: {e}") from None


def folded(g: FrozenGraph, name: str) -> torch.Tensor | None:
    """The value of tensor `name` where it is computed from constants alone (Keras reshapes and
    squeezes its weights in the graph), by the same op modules the converted model runs, in TF's
    layout; None where it depends on the input."""
    node_name, index = _ref(name)
    node = g.node(node_name)
    if node.op == "Const":
        return torch.from_numpy(np.array(const_value(g, node_name)))
    if node.op not in SUPPORTED or node.op == "Placeholder" or index:
        return None
    values = [folded(g, i) for i in _data_inputs(node)]
    if any(v is None for v in values):
        return None
    module, _ = build(g, node, None)
    with torch.no_grad():
        return ops.to_tf(module(*(ops.from_tf(v) for v in values)))


def _weight(g: FrozenGraph, node, index: int) -> torch.Tensor:
    value = folded(g, _data_inputs(node)[index])
    if value is None:
        raise g.error(node, f"input {index} depends on the image, not only on constants: not a weight")
    return value.to(torch.float32)


def _nhwc(g: FrozenGraph, node) -> None:
    if "data_format" in node.attr and g.attr(node, "data_format") not in ("NHWC",):
        raise g.error(node, f"data_format {g.attr(node, 'data_format')}: only NHWC graphs are supported")


def _window(g: FrozenGraph, node, key: str) -> tuple[int, int]:
    values = g.attr(node, key)
    if len(values) != 4 or values[0] != 1 or values[3] != 1:
        raise g.error(node, f"{key} {values}: only spatial windows are supported")
    return values[1], values[2]


def build(g: FrozenGraph, node, softmax: str | None) -> tuple[torch.nn.Module, list[str]]:
    """The op module of `node` and the inputs it reads when the module runs."""
    op, inputs = node.op, _data_inputs(node)
    if op == "Const":
        return ops.Const(torch.from_numpy(np.array(const_value(g, node.name)))), []
    if op in PASS or op in MULTI_OUTPUT or node.name == softmax:
        return ops.Op(op, ops.identity), inputs
    if op in ("Conv2D", "DepthwiseConv2dNative"):
        _nhwc(g, node)
        padding = g.attr(node, "padding")
        if padding not in ("SAME", "VALID", "EXPLICIT"):
            raise g.error(node, f"padding {padding} is not supported")
        explicit = g.attr(node, "explicit_paddings") if padding == "EXPLICIT" else ()
        dilations = _window(g, node, "dilations") if "dilations" in node.attr else (1, 1)
        return ops.Conv(_weight(g, node, 1), _window(g, node, "strides"), dilations, padding, explicit,
                        depthwise=op == "DepthwiseConv2dNative"), inputs[:1]
    if op == "BiasAdd":
        _nhwc(g, node)
        return ops.BiasAdd(_weight(g, node, 1)), inputs[:1]
    if op in FUSED_BN:
        _nhwc(g, node)
        if "is_training" in node.attr and g.attr(node, "is_training"):
            raise g.error(node, "a batch norm in training mode (is_training=true): freeze the model for inference")
        gamma, beta, mean, var = (_weight(g, node, i) for i in range(1, 5))
        return ops.FusedBatchNorm(gamma, beta, mean, var, g.attr(node, "epsilon")), inputs[:1]
    if op == "MatMul" and not (node.attr["transpose_a"].b if "transpose_a" in node.attr else False):
        weight = folded(g, inputs[1])
        if weight is not None and weight.dim() == 2:
            transposed = "transpose_b" in node.attr and node.attr["transpose_b"].b
            return ops.Dense((weight.t() if transposed else weight).to(torch.float32)), inputs[:1]
    if op in ("MaxPool", "AvgPool"):
        _nhwc(g, node)
        return ops.Pool(op, _window(g, node, "ksize"), _window(g, node, "strides"), g.attr(node, "padding")), inputs
    if op in ops.BINARY:
        return ops.binary(op), inputs
    if op in ops.UNARY:
        return ops.unary(op), inputs
    fn, attrs = GENERIC[op]
    kwargs = {kw: g.attr(node, key) for key, kw in attrs.items() if key in node.attr}
    if op == "Cast":
        kwargs["dtype"] = TF_DTYPES[node.attr["DstT"].type]
    if op == "Shape" and "out_type" in node.attr:
        kwargs["out_type"] = TF_DTYPES[node.attr["out_type"].type]
    if op == "StridedSlice" and any(g.attr(node, k) for k in ("ellipsis_mask", "new_axis_mask") if k in node.attr):
        raise g.error(node, "StridedSlice with an ellipsis or a new axis is not supported")
    return ops.Op(op, fn, **kwargs), inputs


def fold_constants(modules: dict, steps: list) -> list:
    """Each node computed from constants alone (a batch norm's multiplier and shift, a reshape's
    static shape) computed once, here, on the CPU, by its own module, and held as a constant: the
    values the module would compute on every CPU forward, bit for bit."""
    values: dict[str, object] = {}
    folded = []
    for key, refs in steps:
        module = modules[key]
        if isinstance(module, ops.Const):
            values[key] = module.value
        elif refs and all(src in values for src, _ in refs):
            with torch.no_grad():
                value = module(*(values[src] if index < 0 else values[src][index] for src, index in refs))
            if isinstance(value, torch.Tensor):
                modules[key], values[key], refs = ops.Const(value, tf_layout=False), value, []
        folded.append((key, refs))
    return folded


def _channel_vector(module, channels: int) -> torch.Tensor | None:
    """A constant holding one value per channel of a convolution's output: [C] (and [1, 1, C] ...,
    broadcast against NHWC's last axis), or a rank-4 one held NCHW, [1, C, 1, 1]; as a [C] vector."""
    value = module.value if isinstance(module, ops.Const) else None
    if value is None or value.numel() != channels or value.dim() > 4:
        return None
    axis = 1 if value.dim() == 4 else value.dim() - 1
    if value.shape[axis] != channels:
        return None
    return value.reshape(channels)


def fold_affine(modules: dict, steps: list) -> None:
    """fold_bn: a convolution's per-channel scale and shift after it (a Keras batch norm frozen as
    `x * mul + shift`, or a FusedBatchNorm) folded into its filter and bias, as TensorFlow's own
    optimizer folds them: the product then rounds once where it rounded twice, moving the logits in
    their last float32 digits (measured against TF: within the tests' 1e-4 of the logits' range)."""
    readers = ops.readers(steps)
    origin: dict[str, str] = {}  # a step now passing a conv's output through -> that conv
    for key, refs in steps:
        module = modules[key]
        srcs = [src for src, _ in refs]
        convs = [origin.get(s, s) for s in srcs if isinstance(modules.get(origin.get(s, s)), ops.Conv)
                 and readers.get(s) == 1]
        if len(convs) != 1:
            continue
        conv = modules[convs[0]].conv
        channels = conv.weight.shape[0]
        if isinstance(module, ops.FusedBatchNorm) and conv.bias is None:
            with torch.no_grad():
                mul = module.weight * torch.rsqrt(module.running_var + module.eps)
                conv.weight.mul_(mul.view(-1, 1, 1, 1))
                conv.bias = torch.nn.Parameter(module.bias - module.running_mean * mul, requires_grad=False)
        elif isinstance(module, ops.Op) and module.kind in ("Mul", "Add", "AddV2") and len(srcs) == 2:
            other = srcs[1] if origin.get(srcs[0], srcs[0]) == convs[0] else srcs[0]
            vector = _channel_vector(modules[other], channels)
            if vector is None or (module.kind == "Mul" and conv.bias is not None):
                continue
            with torch.no_grad():
                if module.kind == "Mul":
                    conv.weight.mul_(vector.view(-1, 1, 1, 1))
                else:
                    conv.bias = torch.nn.Parameter(vector.clone() if conv.bias is None else conv.bias + vector,
                                                   requires_grad=False)
            refs[:] = [r for r in refs if r[0] != other]
        else:
            continue
        modules[key] = ops.Op(f"{module.kind if isinstance(module, ops.Op) else 'FusedBatchNorm'} (folded)",
                              ops.identity)
        origin[key] = convs[0]


def absorb_pads(modules: dict, steps: list) -> None:
    """A Pad of zeros on the spatial axes that only a VALID convolution reads (Keras pads before each
    stride-2 convolution, ZeroPadding2D) taken into that convolution's padding, the Pad left as an
    identity: the same windows over the same zeros without copying the input into a padded one (a
    third of a compiled MobileNetV2's time went into those copies and the partitions they split)."""
    readers = ops.readers(steps)
    at = {key: i for i, (key, _) in enumerate(steps)}
    for key, refs in steps:
        conv = modules[key]
        if not (isinstance(conv, ops.Conv) and conv.padding == "VALID" and len(refs) == 1):
            continue
        src = refs[0][0]
        pad = modules.get(src)
        if not (isinstance(pad, ops.Op) and pad.kind in ("Pad", "PadV2") and readers.get(src) == 1):
            continue
        pad_refs = steps[at[src]][1]
        values = [modules[r].value if isinstance(modules[r], ops.Const) else None for r, _ in pad_refs[1:]]
        if any(v is None for v in values) or values[0].numel() != 8 or (len(values) > 1 and float(values[1]) != 0):
            continue
        (n0, n1), (top, bottom), (left, right), (c0, c1) = values[0].reshape(4, 2).tolist()
        if n0 or n1 or c0 or c1 or min(top, bottom, left, right) < 0:
            continue
        conv.padding = "EXPLICIT"
        conv.set_padding(int(top), int(bottom), int(left), int(right))
        modules[src] = ops.Op(f"{pad.kind} (taken into {key})", ops.identity)
        steps[at[src]] = (src, pad_refs[:1])


def join_biases(modules: dict, steps: list) -> None:
    """A BiasAdd whose input a Dense or a convolution alone reads: its bias moved into that layer (one
    F.linear or convolution with a bias, as compiled CPU models want them: oneDNN Graph refuses a
    product followed by a separate bias add, and fused a convolution, a separate bias add and a
    residual sum wrongly, ResNet50V2's logits 30 off), the BiasAdd left as an identity (its node
    still names the sum). The bias is then added inside the accumulation, not after its rounding."""
    readers = ops.readers(steps)
    for key, refs in steps:
        module = modules[key]
        if isinstance(module, ops.BiasAdd) and len(refs) == 1:
            layer = modules[refs[0][0]]
            if readers.get(refs[0][0]) != 1:
                continue
            if isinstance(layer, ops.Dense) and layer.bias is None:
                layer.bias = module.bias
            elif isinstance(layer, ops.Conv) and layer.conv.bias is None:
                layer.conv.bias = torch.nn.Parameter(module.bias.clone(), requires_grad=False)
            else:
                continue
            modules[key] = ops.Op("BiasAdd", ops.identity)


def convert_graph(graph_def, source: str = "<graph>", input_name: str | None = None,
                  output_name: str | None = None, fold_bn: bool = False) -> Conversion:
    """`graph_def`'s classifier as a GraphModule: fed NCHW float32 images at the placeholder
    (`input_name`, else the graph's one), returning the logits (`output_name`, else the graph's one
    final op, its trailing Softmax or ArgMax left out)."""
    g = FrozenGraph(graph_def, source)
    input_name = input_name or the_placeholder(g)
    if g.node(input_name).op != "Placeholder":
        raise g.error(input_name, f"the input is a {g.node(input_name).op}, not a Placeholder")
    output, softmax, notes = logits_of(g, output_name or final_op(g).name)
    out_node, out_index = _ref(output)
    # Every op the logits need, checked before any is built: all that is missing, named at once.
    order, seen, stack = [], set(), [(out_node, False)]
    while stack:
        name, done = stack.pop()
        if done:
            order.append(name)
            continue
        if name in seen:
            continue
        seen.add(name)
        stack.append((name, True))
        node = g.node(name)
        if node.op in ("Conv2D", "DepthwiseConv2dNative", "BiasAdd", *FUSED_BN):
            stack.append((_ref(_data_inputs(node)[0])[0], False))  # weights read at conversion
        else:  # an op the converter lacks too: what feeds it may lack more
            stack.extend((_ref(i)[0], False) for i in reversed(_data_inputs(node)) if _ref(i)[0] not in seen)
    missing: dict[str, str] = {}
    for name in order:
        if g.node(name).op not in SUPPORTED:
            missing.setdefault(g.node(name).op, name)
    if missing:
        raise GraphError(f"{source}: ops the converter does not support: "
                         + ", ".join(f"{op} (e.g. node '{name}')" for op, name in sorted(missing.items())))
    modules, steps, names = {}, [], {}
    for name in order:
        node = g.node(name)
        if name == input_name:
            continue
        if node.op == "Placeholder":
            raise g.error(node, "a second placeholder feeds the logits: the converter takes one image input")
        module, reads = build(g, node, softmax)
        key = _key(name)
        if key in modules:
            raise g.error(node, f"two nodes map to the module name {key}")
        refs = []
        for r in reads:
            src, index = _ref(r)
            multi = g.node(src).op in MULTI_OUTPUT
            if index and not multi:
                raise g.error(node, f"reads output {index} of {src} ({g.node(src).op}): not supported")
            refs.append((_key(src), index if multi else -1))
        modules[key], names[key] = module, name
        steps.append((key, refs))
    steps = fold_constants(modules, steps)
    if fold_bn:
        fold_affine(modules, steps)
        absorb_pads(modules, steps)
    join_biases(modules, steps)
    out_multi = g.node(out_node).op in MULTI_OUTPUT
    shape = g.attr(g.node(input_name), "shape") if "shape" in g.node(input_name).attr else None
    size = shape[1] if shape and len(shape) == 4 and shape[1] > 0 and shape[1] == shape[2] else None
    if size is not None and shape[3] > 0:
        steps = fold_shapes(modules, steps, names, _key(input_name), (shape[3], size, size))
    module = _assemble(modules, steps, names, _key(input_name), (_key(out_node), out_index if out_multi else -1), size)
    return Conversion(module, input_name, output, size, softmax, notes)


def fold_shapes(modules: dict, steps: list, names: dict, input_name: str, image: tuple[int, int, int]) -> list:
    """A reshape's target computed from the image's shape (Keras: Shape, StridedSlice, Pack of the
    batch size and constants) held as a constant, the batch size as -1: found by running the graph
    on batches of 1 and 2 zero images of the graph's shape (`image`: C, H, W), a target that moves with the batch in one place
    alone. Its computation then leaves the module, which a tracer can then record for any batch
    size (a computed target is fixed at the traced batch's)."""
    reshapes = [(i, key, refs) for i, (key, refs) in enumerate(steps)
                if isinstance(modules[key], ops.Op) and modules[key].kind == "Reshape" and len(refs) == 2
                and not isinstance(modules[refs[1][0]], ops.Const)]
    if not reshapes:
        return steps
    probes = []
    for n in (1, 2):
        env = {input_name: torch.zeros(n, *image)}
        with torch.no_grad():
            for key, refs in steps:
                env[key] = modules[key](*(env[s] if i < 0 else env[s][i] for s, i in refs))
        probes.append(env)
    inserted = {}
    for i, key, refs in reshapes:
        (src, index), values = refs[1], []
        for env in probes:
            value = env[src] if index < 0 else env[src][index]
            values.append([int(v) for v in value.reshape(-1).tolist()])
        one, two = values
        moved = [j for j, (a, b) in enumerate(zip(one, two)) if a != b]
        if len(one) != len(two) or len(moved) > 1 or (moved and (one[moved[0]], two[moved[0]]) != (1, 2)):
            continue
        target = [-1 if j in moved else v for j, v in enumerate(one)]
        const = f"{key}/target"
        modules[const] = ops.Const(torch.tensor(target, dtype=torch.int64), tf_layout=False)
        names[const] = f"{names[key]} (its target, folded)"
        inserted[i] = const
        refs[1] = (const, -1)
    out = []
    for i, step in enumerate(steps):
        if i in inserted:
            out.append((inserted[i], []))
        out.append(step)
    return out


def _assemble(modules: dict, steps: list, names: dict, input_name: str, output: tuple[str, int],
              size: int | None) -> ops.GraphModule:
    """The GraphModule of the steps the output needs (a weight read at conversion, a constant a fold
    used up: no node of its own at run time)."""
    needed, reads = {output[0]}, dict(steps)
    for key, _ in reversed(steps):
        if key in needed:
            needed.update(src for src, _ in reads[key])
    steps = [(key, refs) for key, refs in steps if key in needed]
    return ops.GraphModule({key: modules[key] for key, _ in steps}, steps, input_name, output,
                           {key: names[key] for key, _ in steps}, size).eval()


def fold_graph(module: ops.GraphModule) -> ops.GraphModule:
    """fold_bn=true's folds (batch norms into convolutions, zero pads into them) on a module converted
    without them, as an exported model is written: a new module, `module` left as it is."""
    module = copy.deepcopy(module)
    modules, steps = dict(module.nodes.items()), [(key, list(refs)) for key, refs in module.steps]
    fold_affine(modules, steps)
    absorb_pads(modules, steps)
    return _assemble(modules, steps, module.names, module.input_name, tuple(module.output), module.image_size)
