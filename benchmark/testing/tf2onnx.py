"""A frozen graph converted to ONNX as MLPerf converts it (`tools/convert-to-onnx.sh`: tf2onnx with
the graph's input made NCHW and the softmax/argmax heads as outputs), for the ONNX Runtime baseline."""

from __future__ import annotations

from pathlib import Path

from benchmark.families import family


def free_batch(graph_def, name: str):
    """`graph_def` with the batch dimension of its input placeholder `name` left free (-1), as
    MLPerf's ONNX models have it: TF-slim's 2017 graphs fix it at 1, and tf2onnx would keep that 1."""
    node = next(n for n in graph_def.node if n.name == name.split(":")[0])
    shape = node.attr["shape"].shape
    if shape.dim:
        shape.dim[0].size = -1
    return graph_def


def mlperf_onnx(graph: Path, arch: str, out: Path, opset: int = 11, nchw: bool = True) -> Path:
    """`graph` (a frozen graph .pb) as MLPerf's ONNX model at `out` (written once), its batch free."""
    from preprocessing.tf_import import import_tensorflow

    import_tensorflow()  # before tf2onnx imports it: the import order that is safe beside torchvision
    from tf2onnx import convert

    from benchmark.formats.frozen_graph import parse_graph_def
    from benchmark.runtimes.tf import tf_graph_def
    from preprocessing.files import write_atomically

    if not out.exists():
        f = family(arch)  # MLPerf's tf2onnx input and outputs for the model
        name, outputs = f.input_tensor, list(f.onnx_outputs)
        graph_def = free_batch(tf_graph_def(parse_graph_def(Path(graph).read_bytes(), str(graph))), name)
        model, _ = convert.from_graph_def(graph_def, input_names=[name],
                                          output_names=outputs, opset=opset, inputs_as_nchw=[name] if nchw else None)
        write_atomically(out, lambda tmp: tmp.write_bytes(model.SerializeToString()))
    return out
