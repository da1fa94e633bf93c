"""The GraphDef schema read without TensorFlow gives what TensorFlow's own reading gives."""

import numpy as np
import pytest

from benchmark.formats.frozen_graph import FrozenGraph, GraphError, parse_graph_def
from benchmark.formats.graph_proto import DTYPES, TensorError, graph_def_class, tensor_value
from tests.helpers import SLIM_2017, has


def same_as_tensorflow(data: bytes) -> int:
    """Asserts that every node, attribute and constant of the GraphDef in `data` reads the same as
    through TensorFlow's GraphDef and tensor_util.MakeNdarray; the number of constants compared."""
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    ours, theirs = graph_def_class().FromString(data), tf.compat.v1.GraphDef.FromString(data)
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    assert len(ours.node) == len(theirs.node) > 0
    consts = 0
    for a, b in zip(ours.node, theirs.node):
        assert (a.name, a.op, list(a.input), a.device) == (b.name, b.op, list(b.input), b.device)
        assert sorted(a.attr) == sorted(b.attr)
        for key in a.attr:
            assert a.attr[key].WhichOneof("value") == b.attr[key].WhichOneof("value"), (a.name, key)
            assert a.attr[key].SerializeToString() == b.attr[key].SerializeToString(), (a.name, key)
        if a.op == "Const":
            got, expected = tensor_value(a.attr["value"].tensor), tensor_util.MakeNdarray(b.attr["value"].tensor)
            assert got.dtype == expected.dtype and got.shape == expected.shape, a.name
            assert np.array_equal(got, expected), a.name
            consts += 1
    return consts


@pytest.mark.parametrize("size", [128, 224])
def test_real_graphs_read_as_tensorflow_reads_them(size):
    pb = SLIM_2017 / f"mobilenet_v1_0.25_{size}" / "frozen_graph.pb"
    if not has(pb):
        pytest.skip(f"real graph not found at {pb}")
    assert same_as_tensorflow(pb.read_bytes()) == 166  # weights, batch-norm parameters and shapes


def test_fixture_graph_reads_as_tensorflow_reads_it(fixture_graphs):
    assert same_as_tensorflow(fixture_graphs(0.25, 128, read_identities=False).read_bytes()) > 50


def test_every_constant_form():
    """Each data type a converter may meet, packed (tensor_content) and as value lists, including a
    splat (one value stored for the whole shape, which TensorFlow repeats)."""
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    rng = np.random.default_rng(0)
    graph_def = tf.compat.v1.GraphDef()
    values = {"f32": rng.standard_normal((3, 4)).astype(np.float32), "f64": rng.standard_normal(5),
              "f16": rng.standard_normal(6).astype(np.float16), "i32": np.arange(-3, 4, dtype=np.int32),
              "i64": np.array([2**40, -7]), "u8": np.arange(250, 256, dtype=np.uint8),
              "i8": np.array([-128, 127], np.int8), "i16": np.array([-3, 300], np.int16),
              "u16": np.array([65535, 1], np.uint16), "u32": np.array([2**32 - 1, 3], np.uint32),
              "u64": np.array([2**64 - 1, 5], np.uint64), "bool": np.array([True, False, True]),
              "scalar": np.float32(2.5), "empty": np.zeros((0, 4), np.float32)}
    for name, value in values.items():
        node = graph_def.node.add(name=name, op="Const")
        node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
    for name, value, shape in [("splat", 0.5, [7, 2]), ("splat_int", 3, [4]), ("zeros", 0.0, [3])]:
        node = graph_def.node.add(name=name, op="Const")  # one value for the shape, as tf.fill folds
        node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value, shape=shape))
    for dtype, (_, field) in DTYPES.items():  # each type's values listed in its own field, not packed
        tensor = graph_def.node.add(name=f"listed_{dtype}", op="Const").attr["value"].tensor
        tensor.dtype = dtype
        getattr(tensor, field)[:] = [0x3C00, 0] if field == "half_val" else [1, 0, 1]  # half: 1.0's bits
        tensor.tensor_shape.dim.add(size=len(getattr(tensor, field)))
    node = graph_def.node.add(name="last_repeated", op="Const")  # fewer values than the shape: the last fills it
    node.attr["value"].tensor.dtype, node.attr["value"].tensor.int_val[:] = 3, [5, 6]
    node.attr["value"].tensor.tensor_shape.dim.add(size=4)
    assert same_as_tensorflow(graph_def.SerializeToString()) == len(graph_def.node)
    ours = graph_def_class().FromString(graph_def.SerializeToString())
    assert tensor_value(ours.node[-1].attr["value"].tensor).tolist() == [5, 6, 6, 6]
    splat = next(n for n in graph_def.node if n.name == "splat").attr["value"].tensor
    assert not splat.tensor_content and len(splat.float_val) == 1  # stored once: the reader repeats it


def test_unreadable_constants_and_graphs_are_errors():
    GraphDef = graph_def_class()
    graph_def = GraphDef()
    bad = graph_def.node.add(name="strings", op="Const")
    bad.attr["value"].tensor.dtype = 7  # DT_STRING: no converter reads one
    short = graph_def.node.add(name="short", op="Const")
    short.attr["value"].tensor.dtype, short.attr["value"].tensor.tensor_content = 1, b"\0" * 12
    short.attr["value"].tensor.tensor_shape.dim.add(size=4)
    with pytest.raises(TensorError, match="data type 7 is not one a converter reads"):
        tensor_value(bad.attr["value"].tensor)
    with pytest.raises(TensorError, match=r"3 values for shape \[4\]"):
        tensor_value(short.attr["value"].tensor)
    user = graph_def.node.add(name="user", op="Add", input=["short", "strings"])
    g = FrozenGraph(graph_def, "g.pb")
    with pytest.raises(GraphError, match=r"g.pb: node 'short': constant not readable: 3 values for shape \[4\]"):
        g.const(user, 0)
    with pytest.raises(GraphError, match="x.pb: not a TensorFlow GraphDef"):
        parse_graph_def(b"\xff\xff\xff", "x.pb")
    with pytest.raises(GraphError, match="x.pb: the GraphDef holds no nodes"):
        parse_graph_def(b"", "x.pb")
