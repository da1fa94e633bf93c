"""An ONNX model itself, run in ONNX Runtime on the same cached inputs as the PyTorch model.

The logits are read inside the graph: MLPerf's ONNX models output the softmax (and ResNet-50 the
argmax too), so the tensor feeding those heads is made a graph output and fetched instead, which
ONNX Runtime allows for any value of the graph.
"""

from __future__ import annotations

import numpy as np

from benchmark.evaluation.normalize import Normalizer
from benchmark.formats.onnx_graph import OnnxGraph
from benchmark.runtimes import NumpyInputs


def logits_tensor(g: OnnxGraph) -> str:
    """The tensor MLPerf's heads (Softmax, ArgMax) read, or the graph's one output if it has no head."""
    heads = {n.input[0] for n in g.nodes if n.op_type in ("Softmax", "ArgMax")}
    if len(heads) == 1:
        return heads.pop()
    if not heads and len(g.outputs) == 1:
        return g.outputs[0]
    raise g.error(None, f"cannot tell the logits from the outputs {g.outputs} (heads read {sorted(heads)})")


class OrtModel(NumpyInputs):
    """Callable: NHWC float32 batch to the graph's logits, with the graph's own layout handled (an
    NCHW graph gets the batch transposed). A graph fixed to batch 1 (as tf2onnx writes a TF graph
    whose input has a fixed batch) is run one image at a time."""

    name = "onnxruntime"

    def __init__(self, g: OnnxGraph, threads: int | None = None, device: str = "cpu",
                 normalize: Normalizer | None = None, image_size: int | None = None):
        import onnx

        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeError('backend/reference=onnxruntime needs ONNX Runtime: '
                               'python -m pip install -e ".[onnx]"') from e
        self.graph, self.normalize, self.image_size = g, normalize, image_size
        self.device = "cuda" if str(device).startswith("cuda") else "cpu"
        self.version = ort.__version__
        self.logits_tensor = logits_tensor(g)
        inp = g.inputs[0]
        dims = [d.dim_value or None for d in inp.type.tensor_type.shape.dim]
        self.nchw = dims[1] == 3
        self.max_batch = dims[0]  # None: any
        self.input, self.input_name = inp, inp.name
        model = onnx.ModelProto()
        model.CopyFrom(g.model)
        self.model = model
        self._outputs: set[str] = set(g.outputs)
        self._threads = threads
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError(f"device={device}, but ONNX Runtime has no CUDA provider "
                                   f"(it has {ort.get_available_providers()})")
            providers.insert(0, "CUDAExecutionProvider")
        self.providers = providers
        self.session = None
        self._expose([self.logits_tensor])

    def _expose(self, names: list[str]) -> None:
        """Make `names` graph outputs (any value of the graph can be) and start a session."""
        import onnxruntime as ort
        from onnx import helper

        for name in names:
            if name not in self._outputs:
                self.model.graph.output.append(helper.make_empty_tensor_value_info(name))
                self._outputs.add(name)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # tf2onnx's opset-8 files list weights as inputs: a warning each
        if self._threads:
            options.intra_op_num_threads = int(self._threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.model.SerializeToString(), options, providers=self.providers)

    def _run(self, names: list[str], batch: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2) if self.nchw else batch, dtype=np.float32)
        step = self.max_batch or len(x)
        parts = [self.session.run(names, {self.input_name: x[i:i + step]}) for i in range(0, len(x), step)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(names))]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self._run([self.logits_tensor], batch)
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)

    def tensors(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """Any of the graph's tensors for `batch`, 4-D ones (NCHW inside every ONNX graph) in TF's
        NHWC layout, as the frozen graph gives them, for the layer-by-layer comparison."""
        if any(n not in self._outputs for n in names):
            self._expose(names)
        values = self._run(names, batch)
        return [v.transpose(0, 2, 3, 1) if v.ndim == 4 else v for v in values]

    def close(self) -> None:
        self.session = None


def create(source, options) -> OrtModel:
    """backend=onnxruntime: an .onnx checkpoint as it is, or the converted model exported by
    torch.onnx (a frozen graph or an export); reference=onnxruntime: an .onnx checkpoint only."""
    from benchmark.convert.onnx import first_layer_input
    from preprocessing.errors import ConfigError

    if source.ckpt.is_onnx:
        graph = source.onnx_graph
        size = source.resolve_size(first_layer_input(graph)[1])
    elif options.role != "backend":
        if source.exported:
            raise ConfigError(f"{source.ckpt.path} is an exported PyTorch model: {options.role}=onnxruntime "
                              f"needs the checkpoint it was converted from")
        raise ConfigError(f"{source.ckpt.source} is a TF frozen graph: ONNX Runtime needs an .onnx checkpoint "
                          f"to be a reference (MLPerf publishes both models as ONNX, see model.onnx_urls); "
                          f"backend=onnxruntime runs the converted model exported to ONNX")
    else:
        from benchmark.runtimes.ort_export import OPSET, export_onnx

        model = source.torch_model(options.fold_bn)
        size = source.resolve_size(model.spec.image_size)
        graph = source.timed("convert_s", lambda: export_onnx(model, size, source.ckpt.source))
        source.conversion = {**source.conversion, "onnx": f"the converted model exported by torch.onnx (opset {OPSET})"}
    try:
        return OrtModel(graph, options.threads, options.device, source.normalize, size)
    except RuntimeError as e:
        raise ConfigError(str(e)) from e
