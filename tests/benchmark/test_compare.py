"""Layer-by-layer comparison: every layer paired and within tolerance for right conversions; for
each pitfall injected into a right conversion, the first divergent layer is the perturbed one."""

import json
import subprocess
import sys

import numpy as np
import pytest
from torch import nn

from benchmark.compare import compare_layers
from benchmark.convert import load_converted
from benchmark.evaluation.normalize import Normalizer
from benchmark.formats.checkpoint import open_checkpoint
from benchmark.formats.frozen_graph import FrozenGraph
from benchmark.runtimes.tf import TFGraphModel
from tests.helpers import ENV, TENSORS, config, crops, resnet_inputs, slim_graph


def setup(path, arch, size, x):
    ckpt = open_checkpoint(path)
    graph = FrozenGraph.from_checkpoint(ckpt)
    model, _ = load_converted(arch, ckpt, graph, None)
    tf_model = TFGraphModel(graph, *TENSORS[arch], size, optimize=False)
    return model, tf_model


@pytest.fixture(scope="module")
def mobilenet(fixture_graphs):
    x = Normalizer("mobilenet")(crops(4, 128, offset=3))
    return setup(fixture_graphs(0.25, 128, read_identities=False), "mobilenet_v1", 128, x) + (x,)


@pytest.fixture(scope="module")
def resnet(resnet_graphs):
    x = resnet_inputs(4, offset=3)
    return setup(resnet_graphs(width=16, depth=(1, 2, 1, 1)), "resnet50", 224, x) + (x,)


@pytest.mark.parametrize("size", [224, 128])
def test_real_graphs_every_layer_within_tolerance(size):
    x = Normalizer("mobilenet")(crops(8, size, offset=1, real=True))
    model, tf_model = setup(slim_graph(size, "pb"), "mobilenet_v1", size, x)
    report = compare_layers(model, model.spec.taps, tf_model, x, x)
    assert report["first_divergence"] is None, report["verdict"]
    modules = [r["module"] for r in report["layers"]]
    assert len(modules) == 1 + 27 * 3 + 3  # input; conv, bn, activation per layer; pool, classifier, output
    assert modules[:4] == ["input", "features.conv2d_0.conv", "features.conv2d_0.bn", "features.conv2d_0.act"]


def test_resnet_every_layer_within_tolerance(resnet):
    model, tf_model, x = resnet
    report = compare_layers(model, model.spec.taps, tf_model, x, x)
    assert report["first_divergence"] is None, report["verdict"]
    modules = {r["module"] for r in report["layers"]}
    assert {"conv1", "bn1", "maxpool", "layer1.0.downsample.0", "layer2.1.bn3", "layer2.1", "fc"} <= modules


def first_divergence(model, tf_model, x, torch_x=None):
    report = compare_layers(model, model.spec.taps, tf_model, x if torch_x is None else torch_x, x)
    return report["first_divergence"], report["verdict"]


def perturbed(model, path, module):
    broken = __import__("copy").deepcopy(model)
    parent, _, name = path.rpartition(".")
    setattr(broken.get_submodule(parent) if parent else broken, name, module(broken.get_submodule(path)))
    return broken


def test_symmetric_padding_on_a_stride_2_conv(mobilenet):
    model, tf_model, x = mobilenet

    def symmetric(conv):  # PyTorch's padding=1 where TF pads (0, 1) on an even size
        sym = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 2, padding=1, groups=conv.groups, bias=False)
        sym.weight = conv.weight
        return sym
    broken = perturbed(model, "features.conv2d_2_depthwise.conv", symmetric)
    assert first_divergence(broken, tf_model, x)[0] == "features.conv2d_2_depthwise.conv"


@pytest.mark.parametrize("eps", [1e-5, 1.001e-5])  # PyTorch's default; TF's fused-kernel floor
def test_wrong_batchnorm_epsilon_in_mobilenet(mobilenet, eps):
    model, tf_model, x = mobilenet
    broken = __import__("copy").deepcopy(model)
    broken.features.conv2d_3_pointwise.bn.eps = eps  # the graph's is 1e-3
    assert first_divergence(broken, tf_model, x)[0] == "features.conv2d_3_pointwise.bn"


def test_tf_default_epsilon_in_resnet(resnet):
    model, tf_model, x = resnet
    broken = __import__("copy").deepcopy(model)
    broken.layer1[0].bn2.eps = 1e-3  # TF's default, where the graph says 1.001e-5
    assert first_divergence(broken, tf_model, x)[0] == "layer1.0.bn2"


def test_depthwise_kernel_permuted_like_a_regular_conv(mobilenet):
    """[kh, kw, C, 1] read with a regular conv's HWIO -> OIHW permutation and then reshaped, kh and
    kw end up swapped: a transposed 3x3 kernel."""
    model, tf_model, x = mobilenet
    broken = __import__("copy").deepcopy(model)
    conv = broken.features.conv2d_4_depthwise.conv
    conv.weight.data = conv.weight.data.transpose(2, 3).contiguous()
    assert first_divergence(broken, tf_model, x)[0] == "features.conv2d_4_depthwise.conv"


def test_bgr_input(mobilenet):
    model, tf_model, x = mobilenet
    # Inside the model (first conv reads channels reversed): the first conv diverges ...
    broken = __import__("copy").deepcopy(model)
    conv = broken.features.conv2d_0.conv
    conv.weight.data = conv.weight.data.flip(1).contiguous()
    assert first_divergence(broken, tf_model, x)[0] == "features.conv2d_0.conv"
    # ... fed BGR crops: the input itself diverges, a preprocessing mistake.
    where, verdict = first_divergence(model, tf_model, x, torch_x=np.ascontiguousarray(x[..., ::-1]))
    assert where == "input" and "preprocessing" in verdict


def test_stock_torchvision_max_pool_padding(resnet):
    model, tf_model, x = resnet
    broken = perturbed(model, "maxpool", lambda _: nn.MaxPool2d(3, 2, padding=1))
    assert first_divergence(broken, tf_model, x)[0] == "maxpool"


@pytest.mark.slow
def test_cli_tells_a_preprocessing_difference(samples_dir, tmp_path, capsys):
    report_path = tmp_path / "cmp.json"
    env = dict(ENV)
    common = [sys.executable, "-m", "benchmark.compare", f"model.checkpoint={slim_graph(128, 'pb')}",
              f"dataset.root={samples_dir}", "dataset.limit=4", f"cache_dir={tmp_path}", "progress=false",
              f"compare_file={report_path}"]
    same = subprocess.run(common, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert same.returncode == 0, same.stderr[-2000:]
    assert "all layers within tolerance" in same.stdout
    assert json.loads(report_path.read_text())["first_divergence"] is None
    assert report_path.with_suffix(".png").stat().st_size > 1000
    # the other pipeline in this process (the command line is the one above)
    from benchmark.compare import compare

    compare(config(*common[3:], "compare_preprocess=torchvision", name="compare"))
    report = json.loads(report_path.read_text())
    assert report["first_divergence"] == "input" and "preprocessing" in report["verdict"]
    assert "<== first over tolerance" in capsys.readouterr().out.splitlines()[1]
