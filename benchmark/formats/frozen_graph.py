"""Graph reading stage: a frozen TF GraphDef as a small queryable data-flow graph.

Converters walk the graph by data flow (who consumes what) and read weights through `const`,
which records every Const it hands out so that a converter can prove every weight was used once.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from benchmark.formats.checkpoint import Checkpoint
from benchmark.formats.graph_proto import TensorError, graph_def_class, tensor_value
from preprocessing.errors import UserError


class GraphError(UserError, ValueError):
    """The graph is not what a converter expects; the message names the node."""


def parse_graph_def(data: bytes, source: str):
    """The GraphDef in `data`, read without TensorFlow (graph_proto.py); runtimes/tf.py hands
    TensorFlow its own message."""
    from google.protobuf.message import DecodeError

    graph_def = graph_def_class()()
    try:
        graph_def.ParseFromString(data)
    except DecodeError as e:
        raise GraphError(f"{source}: not a TensorFlow GraphDef ({e})") from e
    if not graph_def.node:
        raise GraphError(f"{source}: the GraphDef holds no nodes")
    return graph_def


def _tensor_node(name: str) -> str:
    """'^ctrl' and 'node:1' both name node 'node'."""
    return name.lstrip("^").split(":")[0]


class FrozenGraph:
    PASS_THROUGH = {"Identity", "Snapshot", "StopGradient"}

    def __init__(self, graph_def, source: str = "<graph>"):
        self.graph_def = graph_def
        self.source = source
        self.nodes = {n.name: n for n in graph_def.node}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in graph_def.node:
            for inp in n.input:
                if not inp.startswith("^"):
                    self.consumers[_tensor_node(inp)].append(n)
        self.used_consts: dict[str, int] = defaultdict(int)
        self.claimed: set[str] = set()  # nodes a converter has accounted for

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> "FrozenGraph":
        return cls(parse_graph_def(ckpt.graph_bytes, ckpt.source), ckpt.source)

    def error(self, node, reason: str) -> GraphError:
        name = node if isinstance(node, str) else node.name
        return GraphError(f"{self.source}: node '{name}': {reason}")

    def node(self, name: str):
        try:
            return self.nodes[_tensor_node(name)]
        except KeyError:
            raise GraphError(f"{self.source}: no node named '{_tensor_node(name)}'") from None

    def producer(self, node, index: int):
        """The node feeding input `index` of `node`, looking through Identity-like nodes."""
        inputs = [i for i in node.input if not i.startswith("^")]
        if index >= len(inputs):
            raise self.error(node, f"expected at least {index + 1} inputs, found {len(inputs)}")
        src = self.node(inputs[index])
        while src.op in self.PASS_THROUGH:
            self.claimed.add(src.name)
            src = self.node(src.input[0])
        return src

    def users(self, node) -> list:
        """The consumers of `node`'s output, looking through Identity-like nodes."""
        found = []
        for user in self.consumers.get(node.name, []):
            if user.op in self.PASS_THROUGH:
                self.claimed.add(user.name)
                found.extend(self.users(user))
            else:
                found.append(user)
        return found

    def next_op(self, node):
        """The single consumer of `node`'s output, looking through Identity-like nodes."""
        users = self.users(node)
        if len(users) != 1:
            names = ", ".join(u.name for u in users) or "nothing"
            raise self.error(node, f"expected exactly one consumer, found {len(users)}: {names}")
        return users[0]

    def const(self, node, index: int) -> np.ndarray:
        """The value of the Const feeding input `index` of `node`; counted as used."""
        src = self.producer(node, index)
        if src.op != "Const":
            raise self.error(node, f"input {index} should be a constant, is '{src.name}' ({src.op})")
        self.used_consts[src.name] += 1
        self.claimed.add(src.name)
        try:
            return tensor_value(src.attr["value"].tensor)
        except TensorError as e:
            raise self.error(src, f"constant not readable: {e}") from None

    def attr(self, node, key: str):
        if key not in node.attr:
            raise self.error(node, f"has no attribute '{key}'")
        value = node.attr[key]
        kind = value.WhichOneof("value")
        if kind == "list":
            return list(value.list.i) or list(value.list.f) or [s.decode() for s in value.list.s]
        if kind == "s":
            return value.s.decode()
        if kind == "shape":
            return None if value.shape.unknown_rank else [d.size for d in value.shape.dim]
        return getattr(value, kind)

    def expect_op(self, node, ops: str | tuple[str, ...]):
        ops = (ops,) if isinstance(ops, str) else ops
        if node.op not in ops:
            raise self.error(node, f"expected op {' or '.join(ops)}, found {node.op}")
        self.claimed.add(node.name)
        return node

    def placeholders(self) -> list:
        return [n for n in self.graph_def.node if n.op == "Placeholder"]

    def check_all_claimed(self) -> None:
        """Every node must have been accounted for by the converter: an unread weight or an op the
        converter did not model would make the PyTorch model compute something else."""
        left = [n for n in self.graph_def.node if n.name not in self.claimed]
        if left:
            n = left[0]
            more = f" (and {len(left) - 1} more)" if len(left) > 1 else ""
            raise self.error(n, f"{n.op} is not part of the converted model{more}")


def graph_input(g: FrozenGraph):
    """The graph's single Placeholder and its image size (None where the graph leaves it open)."""
    inputs = g.placeholders()
    if len(inputs) != 1:
        raise g.error(inputs[1] if inputs else "<input>",
                      f"expected one input placeholder, found {len(inputs)}")
    x = g.expect_op(inputs[0], "Placeholder")
    shape = g.attr(x, "shape") if "shape" in x.attr else None
    if shape is not None and (len(shape) != 4 or shape[3] != 3):
        raise g.error(x, f"input shape {shape} is not NHWC RGB [N, H, W, 3]")
    size = None
    if shape is not None and shape[1] > 0 and shape[2] > 0:
        if shape[1] != shape[2]:
            raise g.error(x, f"non-square input {shape[1]}x{shape[2]} is not supported")
        size = shape[1]
    return x, size
