"""The frozen graph itself, run in TensorFlow on the same cached inputs as the PyTorch model."""

from __future__ import annotations

import numpy as np

from benchmark.evaluation.normalize import Normalizer
from benchmark.formats.frozen_graph import FrozenGraph
from benchmark.runtimes import NumpyInputs
from preprocessing.tf_import import import_tensorflow


def tf_graph_def(graph_def):
    """`graph_def` as TensorFlow's own GraphDef message, the only kind import_graph_def takes (the
    converters read frozen graphs without TensorFlow: formats/graph_proto.py)."""
    tf = import_tensorflow()
    if isinstance(graph_def, tf.compat.v1.GraphDef):
        return graph_def
    return tf.compat.v1.GraphDef.FromString(graph_def.SerializeToString())


class NCHWUnsupported(RuntimeError):
    """TensorFlow's CPU kernels without oneDNN run max pooling (and more) in NHWC only: MLPerf's
    ResNet-50 graph is NCHW."""


class TFGraphModel(NumpyInputs):
    """Callable: NHWC float32 batch to the graph's logits. The graph's input is rebound to a
    placeholder of open batch size, so graphs fixed to batch 1 run in batches too. The session sees
    the CPU only, TF32 off (`devices`: what it had)."""
    name, device = "tf", "cpu"

    def __init__(self, graph: FrozenGraph, input_tensor: str, logits_tensor: str, image_size: int,
                 threads: int | None = None, optimize: bool = True, normalize: Normalizer | None = None):
        tf = import_tensorflow()

        self.image_size, self.normalize, self.version = image_size, normalize, tf.__version__
        # a node's name fetches its operation (no value): its first output is the tensor meant
        input_tensor, logits_tensor = (t if ":" in t else f"{t}:0" for t in (input_tensor, logits_tensor))
        self.logits_tensor = logits_tensor

        graph.node(input_tensor)  # clear errors for misnamed tensors
        graph.node(logits_tensor)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.input = tf.compat.v1.placeholder(tf.float32, [None, image_size, image_size, 3],
                                                  name="harness_input")
            (self.logits,) = tf.graph_util.import_graph_def(
                tf_graph_def(graph.graph_def), input_map={input_tensor: self.input},
                return_elements=[logits_tensor], name="")
        # The reference runs where the results say, the CPU, in float32: a TensorFlow built with GPU
        # support would otherwise place the graph on a GPU, with TF32 on by default there.
        tf.config.experimental.enable_tensor_float_32_execution(False)
        config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
        if not optimize:
            # Grappler rewrites the graph (folds batch norms into convolutions, fuses ops): an
            # intermediate tensor fetched from the rewritten graph need not be the graph's own.
            config.graph_options.rewrite_options.disable_meta_optimizer = True
        if threads:
            config.intra_op_parallelism_threads = threads
            config.inter_op_parallelism_threads = 1
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        self.devices = [d.name for d in self.session.list_devices()]  # recorded with the comparison
        if any(":GPU:" in d for d in self.devices):
            raise RuntimeError(f"the TensorFlow session sees a GPU despite device_count GPU=0: {self.devices}")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        tf = import_tensorflow()
        try:
            out = self.session.run(self.logits, {self.input: batch})
        except tf.errors.InvalidArgumentError as e:
            if "only supports NHWC" in e.message:  # TF's own CPU kernels; its oneDNN ones run NCHW
                said = next(line for line in e.message.splitlines() if "only supports NHWC" in line).strip()
                raise NCHWUnsupported(f"TensorFlow cannot run this NCHW graph on this CPU ({said}): "
                                      "its own CPU kernels run NHWC only, and its oneDNN kernels, which run NCHW, "
                                      "are not in use here") from e
            raise
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)

    def tensors(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """The values of any of the graph's tensors for `batch` (for layer-by-layer comparison)."""
        fetches = [self.graph.get_tensor_by_name(n) for n in names]
        return self.session.run(fetches, {self.input: batch})

    def close(self) -> None:
        self.session.close()


def create(source, options) -> TFGraphModel:
    """backend=tf or reference=tf: the frozen graph itself in TensorFlow."""
    from benchmark.formats.frozen_graph import graph_input
    from preprocessing.errors import ConfigError

    if source.exported:
        raise ConfigError(f"{source.ckpt.path} is an exported PyTorch model: {options.role}=tf needs the "
                          f"checkpoint it was converted from")
    if source.ckpt.is_onnx:
        raise ConfigError(f"{source.ckpt.path} is an ONNX model: TensorFlow needs the frozen graph "
                          f"(use backend=onnxruntime or reference=onnxruntime)")
    graph = source.frozen_graph
    size = source.resolve_size(graph_input(graph)[1])
    return TFGraphModel(graph, *source.tensors, size, options.threads,
                        options.optimize, source.normalize)
