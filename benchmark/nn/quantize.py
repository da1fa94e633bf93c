"""int8 post-training quantization of a converted model: PyTorch's FX flow with its engine's default
mapping (per-channel symmetric int8 weights, per-tensor affine uint8 activations with histogram
observers, convolutions fused with their ReLU and, in ResNet-50, the block's last convolution with
the residual add and its ReLU, by the onednn engine's own backend config: one oneDNN call where
PyTorch's default config makes a convolution and a separate add; ReLU6 by the [0, 6] range of the
convolution's output), calibrated on the batches given, with each
layer's bias corrected for the mean error its weights' rounding adds (`BiasCorrection`). The engine
and the weights' bits depend on the CPU (`Recipe`)."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch

from benchmark.nn.layers import static_padding


class Int8Error(RuntimeError):
    pass


@dataclass(frozen=True)
class Recipe:
    """The quantized engine a model is made for and runs with, its activations' bits, its weights' bits
    (depthwise convolutions' aside: 8 always), whether its biases were corrected, and the FX backend
    config whose patterns it was made with: "onednn" fuses each ResNet-50 block's last convolution,
    residual add and ReLU into one op, "native" (PyTorch's default) adds after the convolution."""
    engine: str
    activation_bits: int
    weight_bits: int
    bias_correction: bool
    backend_config: str = "onednn"

    def to_dict(self) -> dict:
        return asdict(self)


def has_vnni() -> bool:
    """Whether the CPU multiplies uint8 by int8 into int32 directly (AVX512-VNNI, AVX-VNNI, AMX)."""
    probe = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(probe()) if probe is not None else True


def recipe() -> Recipe:
    """oneDNN with 8-bit activations (measured against the x86 and fbgemm engines on the real 0.25/224
    graph on a CPU with VNNI: the most top-1s kept, the fastest) and bias correction; 8-bit weights
    on a CPU with VNNI, 7-bit without (AVX2, AVX512 without VNNI), as ONNX Runtime advises there.
    Such a CPU sums uint8 x int8 products in pairs into int16 (vpmaddubsw), which saturates with
    8-bit activations and weights: on the real 0.25/224 graph on AVX2, 1,000 images, oneDNN's 8-bit
    kernels kept 447 top-1s where the same quantized values in float arithmetic keep 528. A pair of
    255 x 63 products fits in int16, so 7-bit weights (-63..63: `weight_range`) never saturate;
    oneDNN's depthwise kernels widen each product to int32 and keep 8-bit weights (both shown at
    their extremes by a test).
    Measured there with bias correction: 567 top-1s kept with 7-bit weights, 569 with the earlier
    recipe of 7-bit activations (the same, within the flips), and 16 % faster at batch 1, 11 % at
    16, since every ReLU6 can then go (`without_idle_relu6`). (The x86 engine, 7-bit activations,
    kept 511 of 1,000 without bias correction, at 0.07x fp32's speed.)"""
    vnni = has_vnni()
    return Recipe("onednn", activation_bits=8, weight_bits=8 if vnni else 7, bias_correction=True)


def weight_range(bits: int) -> tuple[int, int]:
    """The int8 values a weight of `bits` bits takes in the converted model. 8: -128..127 (PyTorch's
    default; a channel's largest weight, at 127.5 levels, saturates to 127 in the qint8 type, as the
    observer's own rounding clamps it). 7: -63..63, symmetric, so the largest maps to 63 exactly:
    PyTorch's FX conversion quantizes the weights without clamping them to the observer's range, and
    a [-64, 63] observer's largest weight became 64 in the converted layer, where bias correction
    (`rounded`) had measured it clamped at 63."""
    return (-128, 127) if bits == 8 else (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)


def weight_observer(bits: int):
    """Per-channel symmetric int8 weights on `bits` bits, in `weight_range(bits)`."""
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    low, high = weight_range(bits)
    return PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                              quant_min=low, quant_max=high)


def depthwise(layer: torch.nn.Module) -> bool:
    return isinstance(layer, torch.nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels


class BiasCorrection:
    """Empirical bias correction (Nagel et al., "Data-Free Quantization", 2019), as NNCF applies by
    default: rounding a layer's weights to int8 shifts the mean of each of its output channels by
    E[layer(x; W_int8 - W)], which the following layers do not average away (depthwise 3x3 kernels have
    9 weights a channel). The shift is measured on the calibration batches, with the float inputs the
    observers see, and taken off the layer's bias. Measured on the real 0.25/224 graph, 1,000 sample
    images, oneDNN with 7-bit activations on AVX2: 504 top-1s kept without, 569 with (fp32: 593); on
    the 500 not calibrated on, 266 and 293 of fp32's 307. With this recipe's 7-bit weights there:
    508 and 567."""

    def __init__(self, prepared: torch.nn.Module):
        self.layers = [m for m in prepared.modules()
                       if type(m) in (torch.nn.Conv2d, torch.nn.Linear) and getattr(m, "qconfig", None) is not None]
        self.sums: dict[int, tuple[torch.Tensor, int]] = {}
        self.hooks = [m.register_forward_pre_hook(self.observe) for m in self.layers]
        self.errors = {id(m): rounded(m) - m.weight.detach() for m in self.layers}

    def observe(self, layer: torch.nn.Module, args: tuple) -> None:
        (x,) = args
        error = self.errors[id(layer)]
        if isinstance(layer, torch.nn.Conv2d):  # _conv_forward keeps the layer's padding mode
            shift, dims = layer._conv_forward(x, error, None), (0, 2, 3)
        else:
            shift, dims = torch.nn.functional.linear(x, error), tuple(range(x.dim() - 1))
        total, n = self.sums.get(id(layer), (0.0, 0))
        per_channel = shift.numel() // error.shape[0]
        self.sums[id(layer)] = (total + shift.double().sum(dims), n + per_channel)

    def apply(self) -> None:
        """Each layer's bias less its measured shift; the hooks removed."""
        for hook in self.hooks:
            hook.remove()
        with torch.no_grad():
            for layer in self.layers:
                if id(layer) not in self.sums:  # never ran on the calibration batches: nothing measured
                    continue
                total, n = self.sums[id(layer)]
                shift = (total / n).to(layer.weight.dtype)
                bias = torch.zeros_like(shift) if layer.bias is None else layer.bias.detach()
                layer.bias = torch.nn.Parameter(bias - shift, requires_grad=False)


def rounded(layer: torch.nn.Module) -> torch.Tensor:
    """`layer`'s weight as its qconfig's weight observer rounds it (what the converted model multiplies by)."""
    observer = layer.qconfig.weight()
    weight = layer.weight.detach()
    observer(weight)
    scale, zero_point = observer.calculate_qparams()
    if observer.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
        return torch.fake_quantize_per_channel_affine(weight, scale.float(), zero_point.int(), observer.ch_axis,
                                                      observer.quant_min, observer.quant_max)
    return torch.fake_quantize_per_tensor_affine(weight, float(scale), int(zero_point), observer.quant_min,
                                                 observer.quant_max)


def relu6_ranges(prepared: torch.fx.GraphModule, bits: int = 8) -> torch.fx.GraphModule:
    """Each activation that a ReLU6 reads quantized on [0, 6] (scale 6/255 at 8 bits, zero point 0), as TFLite
    quantizes a fused ReLU6: PyTorch has no conv + ReLU6 fusion, and its ReLU6 shares its input's
    observer, which would see the convolution's unclipped outputs (a range of hundreds, 3 levels
    between 0 and 6). Quantizing to [0, 6] saturates: the convolution's int8 output is ReLU6's."""
    from torch.ao.quantization.observer import FixedQParamsObserver

    modules = dict(prepared.named_modules())
    for node in prepared.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), torch.nn.ReLU6):
            (source,) = node.all_input_nodes  # the observer of what ReLU6 reads (the convolution's output)
            if "activation_post_process" in str(source.target):
                levels = 2 ** bits - 1
                setattr(prepared, source.target, FixedQParamsObserver(
                    scale=6.0 / levels, zero_point=0, dtype=torch.quint8, quant_min=0, quant_max=levels))
    return prepared


def quantizable(model: torch.nn.Module, leaves: tuple[type, ...] = ()) -> torch.fx.GraphModule:
    """`model`'s graph in the forms PyTorch's x86/oneDNN patterns fuse: the identities that folded batch
    norms leave between a convolution and its activation removed, and ResNet's in-place residual
    add an ordinary add (which those patterns fuse with the ReLU after it). Modules of `leaves` are
    called, not traced into."""
    import operator

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: torch.nn.Module, name: str) -> bool:
            return isinstance(m, leaves) or super().is_leaf_module(m, name)

    graph = torch.fx.GraphModule(model, Tracer().trace(model))
    modules = dict(graph.named_modules())
    for node in list(graph.graph.nodes):
        if node.op == "call_module" and isinstance(modules[node.target], torch.nn.Identity):
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
        elif node.op == "call_method" and node.target == "add_":
            node.op, node.target = "call_function", operator.add
    graph.graph.lint()
    graph.recompile()
    graph.delete_all_unused_submodules()
    return graph


def quantize_int8(model: torch.nn.Module, image_size: int, batches: Iterable[torch.Tensor]) -> torch.nn.Module:
    """`model` (unchanged) as an int8 model for `image_size` inputs, its activation ranges observed
    on `batches` (float32 NCHW inputs, exactly as the fp32 model takes them)."""
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.backend_config import get_onednn_backend_config
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.observer import HistogramObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from benchmark.nn.graph import GraphModule, flat

    made = recipe()
    # FX traces a fixed graph: TF's SAME padding is fixed for the input size first. A converted graph
    # (model=graph) is laid out as one FX graph by its own code, some of its node modules left whole;
    # with PyTorch's native patterns: its oneDNN conv + add pattern, given a sum of two convolutions'
    # outputs (MobileNetV2's first residual), convolved the other convolution's input
    leaves: tuple[type, ...] = ()
    if isinstance(model, GraphModule):
        made = dataclasses.replace(made, backend_config="native")
        fp32, leaves = flat(model, image_size)
        fp32 = quantizable(fp32, leaves)
    else:
        fp32 = quantizable(static_padding(copy.deepcopy(model).cpu().eval(), image_size))
    # oneDNN's patterns: conv + add + ReLU as one op (ResNet-50's 16 blocks; on its structure, 2 cores
    # with VNNI, 4 % faster at batch 1 and 8 % at 16 than conv, then add + ReLU); on the real 0.25/224
    # graph, which has no add, the int8 model is bit-identical either way
    config = get_onednn_backend_config() if made.backend_config == "onednn" else None
    torch.backends.quantized.engine = made.engine
    example = torch.zeros(1, 3, image_size, image_size)
    mapping = get_default_qconfig_mapping(made.engine)
    activation = HistogramObserver.with_args(reduce_range=made.activation_bits == 7)  # 7: on 0..127
    mapping.set_global(QConfig(activation=activation, weight=weight_observer(made.weight_bits)))
    for name, layer in fp32.named_modules():
        if depthwise(layer):
            mapping.set_module_name(name, QConfig(activation=activation, weight=weight_observer(8)))
    custom = PrepareCustomConfig().set_non_traceable_module_classes(list(leaves))
    prepared = relu6_ranges(prepare_fx(fp32, mapping, (example,), prepare_custom_config=custom, backend_config=config),
                            made.activation_bits)
    correction = BiasCorrection(prepared) if made.bias_correction else None
    seen = 0
    with torch.inference_mode():
        for batch in batches:
            prepared(batch.contiguous())
            seen += len(batch)
    if not seen:
        raise ValueError("int8 calibration needs at least one image")
    if correction is not None:
        correction.apply()
    return without_idle_relu6(convert_fx(prepared, backend_config=config).eval())


def without_idle_relu6(quantized: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The ReLU6s that change nothing removed: those reading a quantized convolution's output whose 256
    levels are [0, 6] exactly (scale 6/255, zero point 0: the 8-bit recipe's ReLU6 ranges). At 7 bits
    the output's levels run to 12 and ReLU6 clips them to the 0..127 the next layer needs: kept. Each
    is a pass over its tensor (a quarter of the batch-1 forward on the real 0.25/224 graph)."""
    modules = dict(quantized.named_modules())
    full = torch.tensor(6.0 / 255).item()  # the scale as the quantized layer keeps it (float32)
    for node in list(quantized.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), torch.nn.ReLU6):
            continue
        (source,) = node.all_input_nodes
        layer = modules.get(source.target) if source.op == "call_module" else None
        if layer is not None and getattr(layer, "zero_point", None) == 0 and getattr(layer, "scale", None) == full:
            node.replace_all_uses_with(source)
            quantized.graph.erase_node(node)
    quantized.graph.lint()
    quantized.recompile()
    quantized.delete_all_unused_submodules()
    return quantized


def traced_int8(quantized: torch.nn.Module, image_size: int) -> torch.jit.ScriptModule:
    """The quantized module as TorchScript, the form that saves and loads whole (a pickled FX module
    of quantized layers does not load back) and runs without this package."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notices; its tracing is exact here
        with torch.inference_mode(False), torch.no_grad():
            return torch.jit.trace(quantized, torch.zeros(1, 3, image_size, image_size)).eval()


RECIPE_FILE = "int8_recipe.json"  # kept inside the saved TorchScript archive


def load_int8(path) -> torch.jit.ScriptModule:
    """A saved int8 model, with its engine set first (loading packs the weights for the engine in
    force); an error where this CPU would run it wrong (8-bit activations and weights made for VNNI,
    on a CPU without: its kernels would saturate) or the file does not say what it was made with."""
    import warnings
    import zipfile

    with zipfile.ZipFile(path) as archive:  # TorchScript's archive: <name>/extra/<file>
        inside = [n for n in archive.namelist() if n.endswith(f"/extra/{RECIPE_FILE}")]
        if not inside:
            raise Int8Error(f"{path}: no {RECIPE_FILE} inside: not an int8 model this harness saved; quantize again")
        # a file from before bias correction, weight bits and the backend config says nothing of them
        made = Recipe(**{"weight_bits": 8, "bias_correction": False, "backend_config": "native",
                         **json.loads(archive.read(inside[0]))})
    if made.activation_bits == 8 and made.weight_bits == 8 and not has_vnni():
        raise Int8Error(f"{path}: made with 8-bit activations and weights for a CPU with VNNI; this CPU has none "
                        f"and its int8 kernels would saturate: quantize again here")
    torch.backends.quantized.engine = made.engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path)).eval()


def save_int8(traced: torch.jit.ScriptModule, path) -> None:
    """`traced` (made by quantize_int8 in this process) with its recipe inside."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(traced, str(path), _extra_files={RECIPE_FILE: json.dumps(recipe().to_dict())})
