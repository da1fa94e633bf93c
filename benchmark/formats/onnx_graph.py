"""Graph reading stage for ONNX checkpoints: an ONNX model (as tf2onnx writes MLPerf's) as a small
data-flow graph that converters walk from the input to the logits, claiming every node they read."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmark.formats.frozen_graph import GraphError


def import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise GraphError('ONNX checkpoints need the onnx package: python -m pip install -e ".[onnx]"') from e
    return onnx


class OnnxGraph:
    def __init__(self, model, source: str):
        from onnx import numpy_helper

        self.model, self.source = model, source
        graph = model.graph
        self.nodes = list(graph.node)
        self.values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in self.nodes:  # Constant nodes are values too
            if node.op_type == "Constant":
                self.values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.consumers: dict[str, list] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
        self.inputs = [i for i in graph.input if i.name not in self.values]
        self.outputs = [o.name for o in graph.output]
        self.claimed: set[int] = {id(n) for n in self.nodes if n.op_type == "Constant"}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> "OnnxGraph":
        from google.protobuf.message import DecodeError

        onnx = import_onnx()

        try:
            model = onnx.load_from_string(data)
        except (DecodeError, ValueError, RuntimeError) as e:
            raise GraphError(f"{source}: not an ONNX model, or a truncated one ({e})") from e
        if not model.graph.node:
            raise GraphError(f"{source}: the ONNX model holds no nodes (a truncated file?)")
        return cls(model, source)

    @classmethod
    def from_file(cls, path: Path) -> "OnnxGraph":
        return cls.from_bytes(Path(path).read_bytes(), str(path))

    def error(self, node, reason: str) -> GraphError:
        where = f"node '{node.name}' ({node.op_type})" if node is not None else "graph"
        return GraphError(f"{self.source}: {where}: {reason}")

    def attrs(self, node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def value(self, node, index: int) -> np.ndarray:
        """A constant input of `node` (an initializer or a Constant node's output)."""
        if index >= len(node.input) or node.input[index] not in self.values:
            raise self.error(node, f"input {index} should be a constant")
        return self.values[node.input[index]]

    def users(self, tensor: str) -> list:
        return self.consumers.get(tensor, [])

    def next_op(self, tensor: str, ops: str | tuple[str, ...] | None = None):
        """The single node consuming `tensor` (claimed), of one of `ops` if given."""
        users = self.users(tensor)
        if len(users) != 1:
            raise GraphError(f"{self.source}: tensor '{tensor}' feeds {len(users)} nodes "
                             f"({', '.join(n.op_type for n in users) or 'none'}), expected one")
        return self.expect(users[0], ops) if ops else self.claim(users[0])

    def expect(self, node, ops: str | tuple[str, ...]):
        ops = (ops,) if isinstance(ops, str) else ops
        if node.op_type not in ops:
            raise self.error(node, f"expected {' or '.join(ops)}")
        return self.claim(node)

    def claim(self, node):
        self.claimed.add(id(node))
        return node

    def check_all_claimed(self) -> None:
        left = [n for n in self.nodes if id(n) not in self.claimed]
        if left:
            raise self.error(left[0], f"not part of the model the converter read ({len(left)} such nodes)")
