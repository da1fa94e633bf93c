"""TensorFlow's GraphDef read without TensorFlow: the part of its protobuf schema a converter reads
(nodes, their attributes, constant tensors), declared here with protobuf's own descriptors.

Converting a frozen graph needs its nodes and weights, not TensorFlow: importing TensorFlow (and
torchvision before it, see preprocessing/tf_import.py) costs about 6 s of a command's start-up.
The field numbers are TensorFlow's (graph.proto, node_def.proto, attr_value.proto, tensor.proto,
tensor_shape.proto, types.proto); fields not declared here (versions, the function library, debug
info) are kept as unknown fields and never read.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "harness.tfgraph"

# message: [(field, number, type, repeated, message type)]
_SCHEMA = {
    "GraphDef": [("node", 1, F.TYPE_MESSAGE, True, "NodeDef")],
    "NodeDef": [("name", 1, F.TYPE_STRING, False, None), ("op", 2, F.TYPE_STRING, False, None),
                ("input", 3, F.TYPE_STRING, True, None), ("device", 4, F.TYPE_STRING, False, None),
                ("attr", 5, F.TYPE_MESSAGE, True, "NodeDef.AttrEntry")],
    "AttrValue": [("list", 1, F.TYPE_MESSAGE, False, "AttrValue.ListValue"), ("s", 2, F.TYPE_BYTES, False, None),
                  ("i", 3, F.TYPE_INT64, False, None), ("f", 4, F.TYPE_FLOAT, False, None),
                  ("b", 5, F.TYPE_BOOL, False, None), ("type", 6, F.TYPE_INT32, False, None),  # DataType
                  ("shape", 7, F.TYPE_MESSAGE, False, "TensorShapeProto"),
                  ("tensor", 8, F.TYPE_MESSAGE, False, "TensorProto"), ("placeholder", 9, F.TYPE_STRING, False, None),
                  ("func", 10, F.TYPE_MESSAGE, False, "NameAttrList")],
    "AttrValue.ListValue": [("s", 2, F.TYPE_BYTES, True, None), ("i", 3, F.TYPE_INT64, True, None),
                            ("f", 4, F.TYPE_FLOAT, True, None), ("b", 5, F.TYPE_BOOL, True, None),
                            ("type", 6, F.TYPE_INT32, True, None),
                            ("shape", 7, F.TYPE_MESSAGE, True, "TensorShapeProto"),
                            ("tensor", 8, F.TYPE_MESSAGE, True, "TensorProto"),
                            ("func", 9, F.TYPE_MESSAGE, True, "NameAttrList")],
    "NameAttrList": [("name", 1, F.TYPE_STRING, False, None),
                     ("attr", 2, F.TYPE_MESSAGE, True, "NameAttrList.AttrEntry")],
    "NodeDef.AttrEntry": [("key", 1, F.TYPE_STRING, False, None), ("value", 2, F.TYPE_MESSAGE, False, "AttrValue")],
    "NameAttrList.AttrEntry": [("key", 1, F.TYPE_STRING, False, None),
                               ("value", 2, F.TYPE_MESSAGE, False, "AttrValue")],
    "TensorShapeProto": [("dim", 2, F.TYPE_MESSAGE, True, "TensorShapeProto.Dim"),
                         ("unknown_rank", 3, F.TYPE_BOOL, False, None)],
    "TensorShapeProto.Dim": [("size", 1, F.TYPE_INT64, False, None), ("name", 2, F.TYPE_STRING, False, None)],
    "TensorProto": [("dtype", 1, F.TYPE_INT32, False, None),
                    ("tensor_shape", 2, F.TYPE_MESSAGE, False, "TensorShapeProto"),
                    ("version_number", 3, F.TYPE_INT32, False, None), ("tensor_content", 4, F.TYPE_BYTES, False, None),
                    ("float_val", 5, F.TYPE_FLOAT, True, None), ("double_val", 6, F.TYPE_DOUBLE, True, None),
                    ("int_val", 7, F.TYPE_INT32, True, None), ("string_val", 8, F.TYPE_BYTES, True, None),
                    ("int64_val", 10, F.TYPE_INT64, True, None), ("bool_val", 11, F.TYPE_BOOL, True, None),
                    ("half_val", 13, F.TYPE_INT32, True, None), ("uint32_val", 16, F.TYPE_UINT32, True, None),
                    ("uint64_val", 17, F.TYPE_UINT64, True, None)],
}
_ONEOF = {"AttrValue": "value"}  # AttrValue's fields are one `value` oneof
_MAPS = {"NodeDef.AttrEntry", "NameAttrList.AttrEntry"}  # map<string, AttrValue>

# DataType: numpy dtype and the TensorProto field holding its values when not in tensor_content
DTYPES = {1: (np.float32, "float_val"), 2: (np.float64, "double_val"), 3: (np.int32, "int_val"),
          4: (np.uint8, "int_val"), 5: (np.int16, "int_val"), 6: (np.int8, "int_val"), 9: (np.int64, "int64_val"),
          10: (np.bool_, "bool_val"), 17: (np.uint16, "int_val"), 19: (np.float16, "half_val"),
          22: (np.uint32, "uint32_val"), 23: (np.uint64, "uint64_val")}


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="harness_tfgraph.proto", package=_PACKAGE, syntax="proto3")
    made: dict[str, descriptor_pb2.DescriptorProto] = {}

    def message(path: str) -> descriptor_pb2.DescriptorProto:
        if path not in made:
            outer, _, inner = path.rpartition(".")
            made[path] = (message(outer).nested_type if outer else f.message_type).add(name=inner)
        return made[path]

    for path, fields in _SCHEMA.items():
        m = message(path)
        m.options.map_entry = path in _MAPS
        if path in _ONEOF:
            m.oneof_decl.add(name=_ONEOF[path])
        for name, number, kind, repeated, type_name in fields:
            field = m.field.add(name=name, number=number, type=kind,
                                label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
            if path in _ONEOF:
                field.oneof_index = 0
    return f


@cache
def graph_def_class():
    """The GraphDef message class (its own descriptor pool: nothing shared with TensorFlow's)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.GraphDef"))


class TensorError(ValueError):
    """A TensorProto that cannot be read as an array; the message says why."""


def tensor_value(t) -> np.ndarray:
    """A TensorProto as a numpy array, as TensorFlow reads one: the packed bytes of
    `tensor_content`, or the typed value list, its last value repeated to fill the shape (a
    constant of one value is stored once)."""
    if t.dtype not in DTYPES:
        raise TensorError(f"data type {t.dtype} is not one a converter reads")
    dtype, field = DTYPES[t.dtype]
    shape = [d.size for d in t.tensor_shape.dim]
    size = int(np.prod(shape, dtype=np.int64))
    if t.tensor_content:
        values = np.frombuffer(t.tensor_content, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    else:
        listed = getattr(t, field)
        values = (np.array(listed, np.uint16).view(np.float16) if dtype is np.float16 else np.array(listed, dtype))
        if 0 < values.size < size:
            values = np.concatenate([values, np.full(size - values.size, values[-1], dtype)])
        elif values.size == 0:
            values = np.zeros(size, dtype)
    if values.size != size:
        raise TensorError(f"{values.size} values for shape {shape}")
    return values.reshape(shape)
