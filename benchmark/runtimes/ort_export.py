"""The harness's own converted model as ONNX, for `backend=onnxruntime` with a frozen graph.

ONNX Runtime runs these models faster than PyTorch's eager CPU kernels (it fuses each convolution
with its activation and residual add and keeps activations in blocked layouts; results/benchmarks.md
has the measurements). Exporting the module the harness converted, rather than converting the frozen
graph again with another tool, keeps one conversion: the same weights, the same batch-norm folding,
checked against TensorFlow the same way. The export is made in memory on every run (under a second),
so no cached file can go stale.
"""

from __future__ import annotations

import copy
import io
import warnings

import torch

from benchmark.formats.onnx_graph import OnnxGraph
from benchmark.nn.layers import static_padding

OPSET = 17
INPUT, OUTPUT = "input", "logits"  # NHWC float32 MLPerf input; the logits (index 0: background)


class NHWCInput(torch.nn.Module):
    """The model taking the cached crops' NHWC layout: ONNX Runtime transposes inside its own
    optimised graph instead of the caller copying every batch into NCHW."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))


def export_onnx(model: torch.nn.Module, image_size: int, source: str) -> OnnxGraph:
    """`model` (batch norms folded) as an ONNX graph with NHWC input and a free batch dimension;
    `model` itself is left as it is."""
    model = NHWCInput(static_padding(copy.deepcopy(model).cpu().eval(), image_size))
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter announces its own deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, image_size, image_size, 3),), buffer, dynamo=False,
                          input_names=[INPUT], output_names=[OUTPUT], opset_version=OPSET,
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    return OnnxGraph.from_bytes(buffer.getvalue(), f"{source} (exported by torch.onnx)")
