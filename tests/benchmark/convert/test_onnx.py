"""MLPerf's ONNX form of both models (tf2onnx's output, opsets 8 and 11, NCHW or NHWC input):
converted to the same PyTorch module as the frozen graph, run in ONNX Runtime, compared layer by
layer; made here with tf2onnx from test-built graphs and the real TF-slim 0.25 graphs."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from benchmark.convert import build_model, convert, load_converted, read_graph
from benchmark.evaluation.normalize import apply_table, lookup_table
from benchmark.formats.checkpoint import open_checkpoint
from benchmark.formats.frozen_graph import FrozenGraph, GraphError
from benchmark.formats.onnx_graph import OnnxGraph
from benchmark.nn.layers import fold_batch_norms
from benchmark.run import run as benchmark_run
from benchmark.runtimes.ort import OrtModel, logits_tensor
from benchmark.testing.tf2onnx import mlperf_onnx
from preprocessing.errors import UserError
from tests.helpers import (
    ENV,
    SAMPLES,
    SMALL_RESNET,
    TENSORS,
    assert_same_predictions,
    config,
    crops,
    unread_dataset,
    has,
    made_once,
    resnet_inputs,
    run_benchmark,
    shared_folder,
    slim_graph,
    tf_tolerance,
    validation_images,
    varied,
    write_layout,
)


def to_onnx(pb, arch: str, opset: int, nchw: bool, folder):
    """The frozen graph as MLPerf converts it: tf2onnx with its inputs and heads (`--inputs-as-nchw`)."""
    out = folder / f"{pb.parent.name}-{pb.stem}-opset{opset}-{'nchw' if nchw else 'nhwc'}.onnx"
    return made_once(out, lambda tmp: mlperf_onnx(pb, arch, tmp, opset, nchw))  # once for both xdist workers


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    return shared_folder(tmp_path_factory, "onnx")


def both_models(pb, onnx_path, arch):
    """The PyTorch module from the ONNX model, and from the frozen graph (batch norms folded)."""
    spec, state = convert(arch, OnnxGraph.from_file(onnx_path))
    ours = build_model(arch, spec, state)
    tf_spec, tf_state = convert(arch, FrozenGraph.from_checkpoint(open_checkpoint(pb)))
    return ours, fold_batch_norms(build_model(arch, tf_spec, tf_state)), spec, tf_spec


def same_structure(spec, tf_spec, arch):
    """The same layers, strides, padding, classes and input size as the frozen graph's conversion."""
    def shape(c):
        return (c.cin, c.cout, c.kernel, c.stride, c.depthwise, c.padding)
    if arch == "mobilenet_v1":
        assert [shape(c) for c in spec.layers] == [shape(c) for c in tf_spec.layers]
        assert [c.name for c in spec.layers] == [c.name for c in tf_spec.layers]
    else:
        assert shape(spec.stem) == shape(tf_spec.stem)
        blocks = [[(shape(b.conv1), shape(b.conv2), shape(b.conv3), b.downsample and shape(b.downsample))
                   for b in stage] for stage in spec.layers]
        assert blocks == [[(shape(b.conv1), shape(b.conv2), shape(b.conv3), b.downsample and shape(b.downsample))
                           for b in stage] for stage in tf_spec.layers]
    assert (spec.pool_kernel, spec.pool_stride, spec.num_classes, spec.image_size) == \
           (tf_spec.pool_kernel, tf_spec.pool_stride, tf_spec.num_classes, tf_spec.image_size)
    assert spec.folded and not tf_spec.folded


def check_agreement(ours, theirs, onnx_path, x, pb, arch):
    """Same parameter names; logits within float32 noise of the frozen graph's conversion (tf2onnx
    folds the batch norms with TF's constants, the harness with its own arithmetic: weights differ
    in the last bits) and of ONNX Runtime, on the basis the TF comparisons use (conftest)."""
    assert list(ours.state_dict()) == list(theirs.state_dict())
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        a, b = ours(nchw).numpy(), theirs(nchw).numpy()
    ort = OrtModel(OnnxGraph.from_file(onnx_path))(x)
    tol = tf_tolerance(pb, arch, x)
    assert_same_predictions(a, b, tol)
    assert_same_predictions(a, ort, tol)


@pytest.mark.parametrize("opset,nchw", [(8, True), (11, True), (11, False), (8, False)])
def test_mobilenet_onnx_is_the_graphs_model(fixture_graphs, onnx_dir, opset, nchw):
    pb = fixture_graphs(0.5, 160)
    path = to_onnx(pb, "mobilenet_v1", opset, nchw, onnx_dir)
    ours, theirs, spec, tf_spec = both_models(pb, path, "mobilenet_v1")
    same_structure(spec, tf_spec, "mobilenet_v1")
    check_agreement(ours, theirs, path, apply_table(lookup_table("mobilenet"), crops(8, 160)), pb, "mobilenet_v1")




def check_resnet_onnx(pb, path):
    ours, theirs, spec, tf_spec = both_models(pb, path, "resnet50")
    same_structure(spec, tf_spec, "resnet50")
    check_agreement(ours, theirs, path, resnet_inputs(4, offset=2), pb, "resnet50")
    assert logits_tensor(OnnxGraph.from_file(path)) == TENSORS["resnet50"][1]  # the logits, not the softmax


# The full structure (opset 11, NCHW, as MLPerf publishes it) is checked in the slow acceptance test
# test_all_samples_through_onnx, which converts it anyway: the quick pass has the small structure.
def test_resnet_onnx_is_the_graphs_model(resnet_graphs, onnx_dir):
    pb = resnet_graphs(**SMALL_RESNET)
    check_resnet_onnx(pb, to_onnx(pb, "resnet50", 8, False, onnx_dir))


def test_real_slim_graphs_through_onnx_equal_through_tf(onnx_dir):
    """The real MobileNet-v1 0.25 graphs (2017 form: unfused batch norms, batch fixed to 1): the
    ONNX model's conversion against the graph's own, ONNX Runtime, and TensorFlow running the graph."""
    from benchmark.runtimes.tf import TFGraphModel

    for size in (128, 224):
        pb = slim_graph(size, "pb")
        path = to_onnx(pb, "mobilenet_v1", 11, True, onnx_dir)
        ours, theirs, spec, tf_spec = both_models(pb, path, "mobilenet_v1")
        same_structure(spec, tf_spec, "mobilenet_v1")
        x = apply_table(lookup_table("mobilenet"), crops(6, size, offset=5, real=True))
        check_agreement(ours, theirs, path, x, pb, "mobilenet_v1")
        tf = TFGraphModel(FrozenGraph.from_checkpoint(open_checkpoint(pb)), *TENSORS["mobilenet_v1"], size)(x)
        nchw = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        with torch.inference_mode():
            assert_same_predictions(ours(nchw).numpy(), tf, tf_tolerance(pb, "mobilenet_v1", x, tf))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_layout(tmp_path_factory.mktemp("val"), "val_map", validation_images(24))


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "benchmark", *args, "progress=false"], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("arch", ["mobilenet_v1", "resnet50"])
def test_end_to_end_with_onnxruntime_reference(arch, fixture_graphs, resnet_graphs, onnx_dir, dataset, tmp_path,
                                               capsys):
    """`python -m benchmark model=... model.checkpoint=<onnx> reference=onnxruntime`, and the same
    predictions as the frozen graph's run and as backend=onnxruntime."""
    pb = fixture_graphs(0.25, 128, read_identities=False) if arch == "mobilenet_v1" else resnet_graphs(**SMALL_RESNET)
    path = to_onnx(pb, arch, 11, True, onnx_dir)
    common = [f"model={arch}", f"dataset.root={dataset}", f"cache_dir={tmp_path / 'cache'}"]
    runs = {}
    for name, extra in {"onnx": [f"model.checkpoint={path}", "reference=onnxruntime"],
                        "ort": [f"model.checkpoint={path}", "backend=onnxruntime"],
                        "openvino": [f"model.checkpoint={path}", "backend=openvino"],
                        "graph": [f"model.checkpoint={pb}"]}.items():
        runs[name] = benchmark_run(config(*common, *extra, f"results_file={tmp_path / name}.json"))
        runs[name]["stdout"], runs[name]["stderr"] = capsys.readouterr()
    onnx = runs["onnx"]
    ref = onnx["reference"]
    assert ref["other"]["backend"] == "onnxruntime" and ref["agreement"] == 24 and ref["disagreements"] == []
    assert ref["other"]["tensor"] == {"mobilenet_v1": "MobilenetV1/Logits/SpatialSqueeze:0",
                             "resnet50": TENSORS["resnet50"][1]}[arch]
    assert f"reference onnxruntime: accuracy={ref['scores']['top1']:.3f}%" in onnx["stdout"]
    assert onnx["predictions"] == runs["graph"]["predictions"] == runs["ort"]["predictions"]
    assert runs["openvino"]["predictions"] == onnx["predictions"] and runs["openvino"]["backend"] == "openvino"
    assert varied(onnx["predictions"])
    # each results file says which library ran the model (and the reference)
    import onnxruntime
    import openvino

    assert runs["ort"]["runtime_version"] == onnx["reference"]["other"]["version"] == onnxruntime.__version__
    assert runs["openvino"]["runtime_version"] == openvino.get_version()
    assert runs["graph"]["runtime_version"] == torch.__version__
    # the same model with its batch fixed at 1 (as tf2onnx writes a graph whose input fixes it): OpenVINO
    # splits batches of 16 as ONNX Runtime does (it sent them whole and failed at the first batch)
    import onnx as onnx_lib

    fixed = tmp_path / f"{path.stem}-batch1.onnx"
    model = onnx_lib.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx_lib.save(model, str(fixed))
    one = benchmark_run(config(*common, f"model.checkpoint={fixed}", "backend=openvino", "batch_size=16",
                               f"results_file={tmp_path / 'openvino-batch1.json'}"))
    assert one["predictions"] == onnx["predictions"]
    assert onnx["fold_bn"] is True and runs["ort"]["backend"] == "onnxruntime"
    # where each run's time went: stages, and the loop's rate after its first batch
    t = onnx["timing"]
    assert set(t) == {"checkpoint_s", "convert_s", "cache_s", "eval_s", "eval_images_per_s"}
    assert all(v > 0 for v in t.values()) and t["eval_images_per_s"] > 0 and ref["timing"]["eval_images_per_s"] > 0
    assert runs["ort"]["timing"]["convert_s"] is None and runs["ort"]["timing"]["eval_s"] > 0
    assert f"evaluation: {t['eval_images_per_s']:.1f} images/s after the first batch" in onnx["stderr"]
    # and through LoadGen, with ONNX Runtime as the system under test
    from benchmark.loadgen.run import run as loadgen_run

    with initialize_config_module("benchmark.conf", version_base="1.3"):
        lg_cfg = compose("loadgen", overrides=["progress=false", *common, f"model.checkpoint={path}",
                                               "backend=onnxruntime", f"loadgen.output_dir={tmp_path / 'lg'}"])
    assert loadgen_run(lg_cfg)["predictions"] == runs["ort"]["predictions"]
    assert onnx["checkpoint"]["sha256"] and onnx["conversion"]["weights_cache"]
    # compare pairs every layer with the ONNX graph's tensors
    report = tmp_path / "compare.json"
    proc = subprocess.run([sys.executable, "-m", "benchmark.compare", *common, f"model.checkpoint={path}",
                           "dataset.limit=4", f"compare_file={report}", "progress=false"], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["reference"] == "onnxruntime" and r["first_divergence"] is None and len(r["layers"]) > 20


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v1", "resnet50"])
def test_all_samples_through_onnx(arch, resnet_graphs, onnx_dir, tmp_path):
    """Acceptance on the samples: the real 0.25/224 graph on all 1,000 and the ResNet-50 of MLPerf's
    structure on 48, as MLPerf's ONNX (opset 11, NCHW): every image agrees with ONNX Runtime, and for
    the real graph the predictions of the frozen graph's own run."""
    if not has(SAMPLES):
        pytest.skip(f"real test data not found at {SAMPLES}")
    pb = slim_graph(224, "pb") if arch == "mobilenet_v1" else resnet_graphs()
    path = to_onnx(pb, arch, 11, True, onnx_dir)
    if arch == "resnet50":  # the full structure converts to the frozen graph's model, layer for layer
        check_resnet_onnx(pb, path)
    common = [f"model={arch}", f"dataset.root={SAMPLES}", f"cache_dir={tmp_path / 'cache'}"]
    # ResNet-50's frozen-graph run over the samples is test_cli's acceptance test, and the ONNX
    # model's predictions equal the frozen graph's in the quick test above: here the ONNX run alone,
    # on the first 48 samples (the suite's time; ResNet-50 runs at ~30 images/s on 2 cores, and its
    # layer-by-layer check above is where a conversion fault shows), run eager: compiling this
    # structure into oneDNN Graph partitions (14 s on one core) is test_cli's ResNet-50 acceptance,
    # and check_resnet_onnx has this module's layers equal to the frozen graph's.
    n = 1000 if arch == "mobilenet_v1" else 48
    eager = [] if arch == "mobilenet_v1" else ["cpu_fusion=false"]
    onnx = run_benchmark(*common, f"model.checkpoint={path}", "reference=onnxruntime", f"dataset.limit={n}", *eager)
    assert onnx["reference"]["agreement"] == n and onnx["total"] == n
    if arch == "mobilenet_v1":
        graph = run_benchmark(*common, f"model.checkpoint={pb}")
        assert onnx["predictions"] == graph["predictions"] and onnx["accuracy_line"] == graph["accuracy_line"]


def onnx_edit(path, edit, out):
    """A copy of the ONNX model at `path`, its graph changed by edit(graph, onnx), written to `out`."""
    import onnx

    model = onnx.load(str(path))
    edit(model.graph, onnx)
    out.write_bytes(model.SerializeToString())
    return out


def test_bad_onnx_models_are_errors_before_preprocessing(fixture_graphs, onnx_dir, tmp_path):
    path = to_onnx(fixture_graphs(0.25, 128, read_identities=False), "mobilenet_v1", 11, True, onnx_dir)
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def swap_first_clip(graph, onnx):
        node = next(n for n in graph.node if n.op_type == "Clip")
        node.op_type, node.name = "Elu", "odd_activation"
        del node.input[1:]

    odd = onnx_edit(path, swap_first_clip, tmp_path / "odd.onnx")
    absent = unread_dataset(tmp_path / "unread")  # the errors come before any image is read
    cases = [
        ([f"model.checkpoint={truncated}"], f"{truncated}: not an ONNX model, or a truncated one"),
        ([f"model.checkpoint={path}", "model=resnet50"], "does not have the structure of model=resnet50"),
        ([f"model.checkpoint={odd}"], "node 'odd_activation' (Elu): expected Clip"),
        ([f"model.checkpoint={path}", "fold_bn=false"], "fold_bn=false: "),
        ([f"model.checkpoint={path}", "reference=tf"], "is an ONNX model: TensorFlow needs the frozen graph"),
        ([f"model.checkpoint={fixture_graphs(0.25, 128, read_identities=False)}", "reference=onnxruntime"],
         "ONNX Runtime needs an .onnx checkpoint"),
        ([f"model.checkpoint={path}", "backend=onnxruntime", "reference=tf"], "TensorFlow needs the frozen graph"),
        ([f"model.checkpoint={path}", "backend=onnxruntime", "reference=onnxruntime"], "compares the torch backend"),
    ]
    for overrides, message in cases:
        with pytest.raises(UserError) as error:
            benchmark_run(config(*overrides, f"dataset.root={absent}", f"cache_dir={tmp_path / 'c'}"))
        assert message in str(error.value), overrides
    proc = run(f"model.checkpoint={odd}", f"dataset.root={absent}", cwd=tmp_path)  # on the command line
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {run_error(odd)}"]


def run_error(path):
    try:
        convert("mobilenet_v1", OnnxGraph.from_file(path))
    except GraphError as e:
        return str(e)


def test_weight_cache_and_export(fixture_graphs, onnx_dir, tmp_path):
    from benchmark.convert import load_exported
    from benchmark.export import export

    path = to_onnx(fixture_graphs(0.25, 128, read_identities=False), "mobilenet_v1", 8, True, onnx_dir)
    ckpt = open_checkpoint(path)
    first, info = load_converted("mobilenet_v1", ckpt, None, tmp_path)
    again, cached = load_converted("mobilenet_v1", ckpt, None, tmp_path)
    assert info["converted"] and not cached["converted"]
    x = torch.from_numpy(apply_table(lookup_table("mobilenet"), crops(2, 128))).permute(0, 3, 1, 2).contiguous()
    out = tmp_path / "m.safetensors"
    export(first, "mobilenet_v1", ckpt, out, {"model": "mobilenet_v1", "normalization": "mobilenet"})
    exported, meta = load_exported(out)
    with torch.inference_mode():
        assert torch.equal(first(x), again(x)) and torch.equal(first(x), exported(x))
    assert meta["checkpoint_sha256"] == ckpt.sha256 and read_graph(ckpt).opset == 8
    with pytest.raises(GraphError, match="does not have the structure of model=resnet50"):
        load_converted("resnet50", ckpt, None, None)


def _gemm(graph, onnx):
    """MatMul + Add of the dense layer as one Gemm with the weights transposed (transB=1)."""
    from onnx import numpy_helper

    matmul = next(n for n in graph.node if n.op_type == "MatMul")
    add = next(n for n in graph.node if n.op_type == "Add" and matmul.output[0] in n.input)
    init = {t.name: t for t in graph.initializer}
    w = numpy_helper.to_array(init[matmul.input[1]])
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w.T), "dense_wt"))
    bias = next(i for i in add.input if i != matmul.output[0])
    gemm = onnx.helper.make_node("Gemm", [matmul.input[0], "dense_wt", bias], [add.output[0]], name="dense_gemm",
                                 transB=1)
    index = list(graph.node).index(matmul)
    graph.node.remove(matmul)
    graph.node.remove(add)
    graph.node.insert(index, gemm)


def _batch_norm(graph, onnx):
    """The first convolution's batch norm as a BatchNormalization node (random statistics)."""
    from onnx import numpy_helper

    conv = next(n for n in graph.node if n.op_type == "Conv")
    cout = numpy_helper.to_array(next(t for t in graph.initializer if t.name == conv.input[1])).shape[0]
    rng = np.random.default_rng(0)
    names = []
    for part, value in (("scale", rng.uniform(0.5, 2, cout)), ("b", rng.normal(0, 1, cout)),
                        ("mean", rng.normal(0, 1, cout)), ("var", rng.uniform(0.5, 2, cout))):
        names.append(f"bn_{part}")
        graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), names[-1]))
    out = conv.output[0]
    conv.output[0] = "conv_raw"
    bn = onnx.helper.make_node("BatchNormalization", ["conv_raw", *names], [out], name="bn_node", epsilon=1e-3)
    graph.node.insert(list(graph.node).index(conv) + 1, bn)


def _pad(graph, onnx):
    """The first convolution's TF SAME pads (0 before, 1 after) as an explicit Pad node (opset 11 form)."""
    from onnx import numpy_helper

    conv = next(n for n in graph.node if n.op_type == "Conv")
    pads = next(a for a in conv.attribute if a.name == "pads")
    assert list(pads.ints) == [0, 0, 1, 1]
    pads.ints[:] = [0, 0, 0, 0]
    graph.initializer.append(numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pad_amounts"))
    pad = onnx.helper.make_node("Pad", [conv.input[0], "pad_amounts"], ["padded"], name="pad_node", mode="constant")
    conv.input[0] = "padded"
    graph.node.insert(list(graph.node).index(conv), pad)


@pytest.mark.parametrize("edit", ["gemm", "batch_norm", "pad"])
def test_other_forms_tf2onnx_writes(edit, fixture_graphs, resnet_graphs, onnx_dir, tmp_path):
    """Gemm for the dense layer, a BatchNormalization left unfolded, an explicit Pad: each converts,
    and the module agrees with ONNX Runtime running the same edited model."""
    if edit == "gemm":
        arch, pb, x = "resnet50", resnet_graphs(**SMALL_RESNET), resnet_inputs(4, offset=1)
    else:
        arch, pb = "mobilenet_v1", fixture_graphs(0.25, 128, read_identities=False)
        x = apply_table(lookup_table("mobilenet"), crops(4, 128))
    path = onnx_edit(to_onnx(pb, arch, 11, True, onnx_dir), {"gemm": _gemm, "batch_norm": _batch_norm, "pad": _pad}[edit],
                     tmp_path / f"{edit}.onnx")
    g = OnnxGraph.from_file(path)
    assert {"gemm": "Gemm", "batch_norm": "BatchNormalization", "pad": "Pad"}[edit] in {n.op_type for n in g.nodes}
    spec, state = convert(arch, g)
    model = build_model(arch, spec, state)
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        ours = model(nchw).numpy()
    assert_same_predictions(ours, OrtModel(OnnxGraph.from_file(path))(x), tf_tolerance(pb, arch, x))


def test_per_channel_constants_are_read_by_their_broadcast_shape():
    """On an NCHW tensor a constant is per channel only as [C, 1, 1] or [1, C, 1, 1]: broadcasting
    aligns on the right, so [C], [1, C] and [1, C, 1] run along the width or height, and taking them
    for channels is silently wrong exactly when the sizes match (here W == C)."""
    import onnx
    from onnx import helper, numpy_helper

    from benchmark.convert.onnx import _per_channel

    c = 4
    for shape, per_channel in [((1, c, 1, 1), True), ((c, 1, 1), True), ((c,), False), ((1, c), False),
                               ((1, c, 1), False), ((1, 1, 1, c), False)]:
        const = numpy_helper.from_array(np.arange(c, dtype=np.float32).reshape(shape), "k")
        graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, c, c])],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], [const])
        g = OnnxGraph.from_bytes(helper.make_model(graph).SerializeToString(), "mul.onnx")
        got = _per_channel(g, g.nodes[0], c)
        assert (got is not None) == per_channel, shape
        if per_channel:
            assert got.tolist() == list(range(c))


def test_onnx_forms_read_wrongly_before_are_refused(resnet_graphs, onnx_dir, tmp_path):
    """Each converts exactly or is refused naming the node: a Pad filling with a non-zero `value`
    (its attribute before opset 11), MaxPool attributes the converter does not model, an input
    feeding two nodes (a bare ValueError before)."""
    path = to_onnx(resnet_graphs(**SMALL_RESNET), "resnet50", 8, False, onnx_dir)

    def set_attr(op, name, value):
        def edit(graph, onnx):
            node = next(n for n in graph.node if n.op_type == op)
            kept = [a for a in node.attribute if a.name != name]
            del node.attribute[:]
            node.attribute.extend([*kept, onnx.helper.make_attribute(name, value)])
        return edit

    def second_user(graph, onnx):
        graph.node.append(onnx.helper.make_node("Identity", [graph.input[0].name], ["extra"], name="extra_user"))

    def pad_filling_with(value):
        def edit(graph, onnx):  # an explicit opset-8 Pad before the stem (tf2onnx merged this one into the conv)
            conv = next(n for n in graph.node if n.op_type == "Conv")
            pad = onnx.helper.make_node("Pad", [conv.input[0]], ["padded"], name="stem_pad", mode="constant",
                                        pads=[0, 0, 1, 1, 0, 0, 1, 1], value=value)
            conv.input[0] = "padded"
            graph.node.insert(list(graph.node).index(conv), pad)
        return edit

    cases = [(pad_filling_with(1.0), r"node 'stem_pad' \(Pad\): only zero padding"),
             (set_attr("MaxPool", "kernel_shape", [3, 2]), r"max pool kernel \[3, 2\]"),
             (set_attr("MaxPool", "dilations", [2, 2]), r"dilations \[2, 2\]"),
             (set_attr("MaxPool", "ceil_mode", 1), "ceil_mode 1"),
             (second_user, r"node 'extra_user' \(Identity\): input .* feeds 2 nodes")]
    for i, (edit, message) in enumerate(cases):
        edited = onnx_edit(path, edit, tmp_path / f"edited{i}.onnx")
        with pytest.raises(GraphError, match=message):
            convert("resnet50", OnnxGraph.from_file(edited))
