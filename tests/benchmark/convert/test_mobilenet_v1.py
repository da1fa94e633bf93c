"""Frozen graph to PyTorch: structure read off the graph, every weight used, torch equal to TF."""

import io
import tarfile

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.convert import build_model, convert, load_converted
from benchmark.evaluation.normalize import apply_table, lookup_table
from benchmark.formats.checkpoint import CheckpointError, open_checkpoint
from benchmark.formats.frozen_graph import FrozenGraph, GraphError, parse_graph_def
from benchmark.nn.layers import Conv2dSame, TFBatchNorm2d, fold_batch_norms
from benchmark.runtimes.tf import TFGraphModel, tf_graph_def
from tests.helpers import TENSORS, assert_same_predictions, crops, slim_graph, synthetic_images, tf_tolerance

INPUT, LOGITS = TENSORS["mobilenet_v1"]


def torch_vs_tf(path, size, n=24, fold=False, x=None, fault=None, real=False):
    """(spec, got, expected, tolerance): the converted model's logits and TF's on `x` (default: n
    crops that are not the calibration images; of the real samples with `real`), and how far apart
    a right conversion may be."""
    ckpt = open_checkpoint(path)
    graph = FrozenGraph.from_checkpoint(ckpt)
    spec, state = convert("mobilenet_v1", graph)
    model = build_model("mobilenet_v1", spec, state)
    if fold:
        fold_batch_norms(model)
    x = apply_table(lookup_table("mobilenet"), crops(n, size, offset=3, real=real)) if x is None else x
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    if fault:
        fault(model)
    expected = TFGraphModel(FrozenGraph.from_checkpoint(ckpt), INPUT, LOGITS, size)(x)
    tol = tf_tolerance(path, "mobilenet_v1", x, expected)  # from TensorFlow alone: a fault cannot widen it
    with torch.inference_mode():
        got = model(xt).numpy()
    return spec, got, expected, tol


@pytest.mark.parametrize("fold", [False, True], ids=["graph-order", "folded"])
@pytest.mark.parametrize("multiplier,size,kwargs", [
    (0.25, 128, dict(read_identities=False)),
    (0.5, 193, dict(bn_op="FusedBatchNormV3")),  # odd size: stride-2 SAME pads (1, 1)
    (1.0, 224, dict()),  # MLPerf's shape
    (0.75, 160, dict(fixed_batch=1)),
])
def test_fixture_graphs_torch_equals_tf(fixture_graphs, multiplier, size, kwargs, fold):
    spec, got, expected, tol = torch_vs_tf(fixture_graphs(multiplier, size, **kwargs), size, fold=fold)
    channels = [max(int(c * multiplier), 8) for c in (32, 64, 128, 128, 256, 256, 512, 512, 512,
                                                      512, 512, 512, 1024, 1024)]
    assert [l.cout for l in spec.layers if not l.depthwise] == channels
    assert [l.stride for l in spec.layers if l.depthwise] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert spec.layers[0].stride == 2 and spec.num_classes == 1001 and spec.image_size == size
    assert all(l.eps == pytest.approx(0.001) for l in spec.layers)
    assert spec.pool_kernel == min(7, -(-size // 32))
    assert_same_predictions(got, expected, tol)  # see tests.helpers.FLOAT32_NOISE_FACTOR


@pytest.mark.parametrize("size", [224, 128])
@pytest.mark.parametrize("form", ["pb", "tgz"])
def test_real_slim_graphs_torch_equals_tf(size, form):
    spec, got, expected, _ = torch_vs_tf(slim_graph(size, form), size, real=True)
    assert spec.pool_kernel == {224: 7, 128: 4}[size]
    assert [l.cout for l in spec.layers[:3]] == [8, 8, 16]  # depth multiplier 0.25
    assert all(l.folded_bn for l in spec.layers)  # the 2017 graphs' unfused batch norm
    assert_same_predictions(got, expected, 1e-4)


def pytorch_epsilon(model):
    for m in model.modules():
        if isinstance(m, TFBatchNorm2d):
            m.eps = 1e-5  # PyTorch's default; the graph's is 1e-3


def symmetric_padding(model):
    """PyTorch's padding=1 on the stride-2 convolutions, where TF pads (0, 1) on even sizes."""
    for name, m in list(model.named_modules()):
        if isinstance(m, Conv2dSame) and m.stride == (2, 2):
            sym = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, 2, padding=m.kernel_size[0] // 2,
                            groups=m.groups, bias=m.bias is not None)
            sym.weight, sym.bias = m.weight, m.bias
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, sym)


def swapped_mean_and_variance(model):
    """Every batch norm's moving mean read as its variance and the reverse (a name mix-up)."""
    for m in model.modules():
        if isinstance(m, TFBatchNorm2d):
            m.running_mean, m.running_var = m.running_var.clone(), m.running_mean.abs().clone()


def dropped_bias(model):
    """The classifier's bias left out (read from no node)."""
    with torch.no_grad():
        model.classifier.bias.zero_()


def transposed_depthwise_kernel(model):
    """Each depthwise kernel's height and width exchanged (a wrong permute of [kh, kw, C, 1])."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.groups > 1:
                m.weight.copy_(m.weight.transpose(2, 3).clone())


def wrong_stride(model):
    """The strides of two depthwise layers exchanged (Conv2d_2's 2 and Conv2d_3's 1): the output
    keeps its size, every value moves."""
    a, b = (model.get_submodule(f"features.conv2d_{i}_depthwise.conv") for i in (2, 3))
    a.stride, b.stride = b.stride, a.stride


# The known pitfalls on synthetic images as on real crops; the other faults a converter can make on
# real crops (a conversion's tolerance, from the right conversion, on what MLPerf feeds).
@pytest.mark.parametrize("inputs,fault", [
    *((inputs, fault) for inputs in ("synthetic", "samples") for fault in (pytorch_epsilon, symmetric_padding)),
    *(("samples", fault) for fault in (swapped_mean_and_variance, dropped_bias, transposed_depthwise_kernel,
                                       wrong_stride))],
    ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_conversion_faults_fail_the_comparison(fixture_graphs, inputs, fault):
    """The comparison above, on synthetic images as on real crops, fails a conversion with a
    known pitfall by far: the fault moves the logits hundreds of times the tolerance."""
    if inputs == "samples":
        x = apply_table(lookup_table("mobilenet"), crops(8, 224, offset=3, real=True))
    else:
        x = apply_table(lookup_table("mobilenet"), synthetic_images(8, 224, seed=3))
    _, got, expected, tol = torch_vs_tf(fixture_graphs(1.0, 224), 224, x=x, fault=fault)
    with pytest.raises(AssertionError, match=r"max \|torch - tf\|"):
        assert_same_predictions(got, expected, tol)
    assert np.abs(got - expected).max() > 100 * tol


def graph_with_extra(path, extra):
    import tensorflow as tf

    graph_def = tf_graph_def(parse_graph_def(path.read_bytes(), str(path)))
    with tf.Graph().as_default() as g:
        tf.graph_util.import_graph_def(graph_def, name="")
        extra(g)
        return FrozenGraph(g.as_graph_def(), "edited")


def test_unexpected_consumer_names_the_node(fixture_graphs):
    import tensorflow as tf

    def branch(g):
        tf.identity(tf.nn.relu(g.get_tensor_by_name("MobilenetV1/MobilenetV1/Conv2d_3_depthwise/Relu6:0")),
                    name="stray")
    graph = graph_with_extra(fixture_graphs(0.25, 128, read_identities=False), branch)
    with pytest.raises(GraphError, match="Conv2d_3_depthwise/Relu6.*expected exactly one consumer"):
        convert("mobilenet_v1", graph)


def test_unused_node_is_an_error(fixture_graphs):
    import tensorflow as tf

    def unused(g):
        tf.constant(np.ones(3, np.float32), name="MobilenetV1/Conv2d_14/weights")
    graph = graph_with_extra(fixture_graphs(0.25, 128, read_identities=False), unused)
    with pytest.raises(GraphError, match="Conv2d_14/weights.*not part of the converted model"):
        convert("mobilenet_v1", graph)


def test_weights_cache_converts_once(fixture_graphs, tmp_path, monkeypatch):
    import benchmark.convert as conv

    ckpt = open_checkpoint(fixture_graphs(0.25, 128, read_identities=False))
    model, info = load_converted("mobilenet_v1", ckpt, None, tmp_path)
    assert info["converted"] and info["weights_cache"].endswith(".safetensors")
    monkeypatch.setattr(conv, "convert", lambda *a: pytest.fail("converted again"))
    cached, info = load_converted("mobilenet_v1", ckpt, None, tmp_path)
    assert not info["converted"]
    x = torch.from_numpy(apply_table(lookup_table("mobilenet"), crops(4, 128))).permute(0, 3, 1, 2)
    with torch.inference_mode():
        assert torch.equal(model(x), cached(x))


def test_tgz_member_selection_and_errors(tmp_path):
    def tgz(name, members):
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            for member, data in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    # MLPerf's archive layout: checkpoint files, TFLite, eval graph text, and the frozen graph.
    ok = tgz("m.tgz", {"./m.ckpt.index": b"i", "./m.tflite": b"t", "./m_eval.pbtxt": b"p",
                       "./m_frozen.pb": b"graph", "./m_quantized.pb": b"q"})
    ckpt = open_checkpoint(ok)
    assert ckpt.member == "./m_frozen.pb" and ckpt.graph_bytes == b"graph"
    with pytest.raises(CheckpointError, match="no_graph.tgz.*found 0"):
        open_checkpoint(tgz("no_graph.tgz", {"m.tflite": b"t"}))
    with pytest.raises(CheckpointError, match="two.tgz.*found 2"):
        open_checkpoint(tgz("two.tgz", {"a/frozen.pb": b"1", "b/frozen.pb": b"2"}))
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(CheckpointError, match="bad.tgz.*not a readable tar"):
        open_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        open_checkpoint(tmp_path / "absent.pb")


def test_garbage_graph_is_an_error(tmp_path):
    path = tmp_path / "garbage.pb"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(GraphError, match="garbage.pb"):
        FrozenGraph.from_checkpoint(open_checkpoint(path))
