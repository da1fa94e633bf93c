"""The frozen graph itself, run in TensorFlow on the same cached inputs as the PyTorch model."""

from __future__ import annotations

import numpy as np

from .graph import FrozenGraph


class TFGraphModel:
    """Callable: NHWC float32 batch to the graph's logits. The graph's input is rebound to a
    placeholder of open batch size, so graphs fixed to batch 1 run in batches too."""

    def __init__(self, graph: FrozenGraph, input_tensor: str, logits_tensor: str, image_size: int,
                 threads: int | None = None):
        import tensorflow as tf

        graph.node(input_tensor)  # clear errors for misnamed tensors
        graph.node(logits_tensor)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.input = tf.compat.v1.placeholder(tf.float32, [None, image_size, image_size, 3],
                                                  name="harness_input")
            (self.logits,) = tf.graph_util.import_graph_def(
                graph.graph_def, input_map={input_tensor: self.input},
                return_elements=[logits_tensor], name="")
        config = tf.compat.v1.ConfigProto()
        if threads:
            config.intra_op_parallelism_threads = threads
            config.inter_op_parallelism_threads = 1
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run(self.logits, {self.input: batch})
        return out.reshape(len(batch), -1)

    def close(self) -> None:
        self.session.close()
