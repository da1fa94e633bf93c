"""An ONNX model in OpenVINO on the CPU (backend=openvino): Intel's inference runtime, which its MLPerf
CPU results use, run on the same cached inputs as the other runtimes. As for ONNX Runtime, the
logits are read inside the graph (the tensor MLPerf's softmax head reads)."""

from __future__ import annotations

import numpy as np

from benchmark.evaluation.normalize import Normalizer
from benchmark.formats.onnx_graph import OnnxGraph
from benchmark.runtimes import NumpyInputs
from benchmark.runtimes.ort import logits_tensor
from preprocessing.errors import ConfigError


class OpenVINOModel(NumpyInputs):
    """Callable: NHWC float32 batch to the graph's logits (an NCHW graph gets the batch transposed; a
    graph fixed to batch 1 gets its images one at a time)."""

    name = "openvino"

    def __init__(self, g: OnnxGraph, path: str, threads: int | None = None,
                 normalize: Normalizer | None = None, image_size: int | None = None):
        try:
            import openvino as ov
        except ImportError as e:
            raise ConfigError('backend=openvino needs OpenVINO: python -m pip install -e ".[bench]"') from e
        self.graph, self.normalize, self.image_size, self.device = g, normalize, image_size, "cpu"
        self.version = ov.get_version()
        self.logits_tensor = logits_tensor(g)
        dims = [d.dim_value or None for d in g.inputs[0].type.tensor_type.shape.dim]
        self.nchw = dims[1] == 3
        # A graph fixed to batch 1 (tf2onnx of a graph whose input has a fixed batch) may hold that
        # batch in its own reshapes too: its batches run one image at a time, as in ONNX Runtime.
        self.max_batch = dims[0]  # None: any
        core = ov.Core()
        model = core.read_model(path)
        model.add_outputs([self.logits_tensor])
        # one request at a time, all its threads on it; float32 arithmetic, as the graph's: on a CPU with
        # bf16 support OpenVINO would otherwise compute in bf16 (its default there)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.output = next(o for o in self.compiled.outputs if self.logits_tensor in o.get_names())

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2) if self.nchw else batch, dtype=np.float32)
        step = self.max_batch or len(x)
        parts = [x[i:i + step] for i in range(0, len(x), step)]
        # copied: the request's output buffer is its own, written again by the next infer
        outs = [np.array(self.request.infer({0: p})[self.output], dtype=np.float32).reshape(len(p), -1) for p in parts]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def close(self) -> None:
        self.request = self.compiled = None


def create(source, options) -> OpenVINOModel:
    """backend=openvino: an .onnx checkpoint (MLPerf's, or tf2onnx's of a frozen graph), on the CPU."""
    from benchmark.convert.onnx import first_layer_input

    if options.role != "backend":
        raise ConfigError(f"{options.role}=openvino: OpenVINO runs as the backend only")
    if not source.ckpt.is_onnx:
        raise ConfigError(f"backend=openvino runs an .onnx checkpoint; {source.ckpt.source} is not one "
                          f"(MLPerf publishes both models as ONNX: model.onnx_urls)")
    if str(options.device) not in ("cpu", "auto"):
        raise ConfigError(f"backend=openvino runs on the CPU here, not device={options.device}")
    graph = source.onnx_graph
    return OpenVINOModel(graph, str(source.ckpt.path), options.threads, source.normalize,
                         source.resolve_size(first_layer_input(graph)[1]))
