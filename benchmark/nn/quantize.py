"""int8 post-training quantization of a converted model: PyTorch's FX flow with the x86 backend's
default mapping (per-channel symmetric int8 weights, per-tensor affine uint8 activations with
histogram observers, convolutions fused with their ReLU/ReLU6 and, in ResNet-50, the residual add),
calibrated on the batches given."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

from benchmark.nn.layers import static_padding

ENGINE = "x86"


def quantize_int8(model: torch.nn.Module, image_size: int, batches: Iterable[torch.Tensor]) -> torch.nn.Module:
    """`model` (unchanged) as an int8 model for `image_size` inputs, its activation ranges observed
    on `batches` (float32 NCHW inputs, exactly as the fp32 model takes them)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = ENGINE
    # FX traces a fixed graph: TF's SAME padding is fixed for the input size first.
    fp32 = static_padding(copy.deepcopy(model).cpu().eval(), image_size)
    example = torch.zeros(1, 3, image_size, image_size)
    prepared = prepare_fx(fp32, get_default_qconfig_mapping(ENGINE), (example,))
    seen = 0
    with torch.inference_mode():
        for batch in batches:
            prepared(batch.contiguous())
            seen += len(batch)
    if not seen:
        raise ValueError("int8 calibration needs at least one image")
    return convert_fx(prepared).eval()
