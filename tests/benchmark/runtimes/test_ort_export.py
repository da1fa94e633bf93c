"""backend=onnxruntime with a frozen graph: the converted model exported by torch.onnx, run in ONNX
Runtime, checked against TensorFlow like the torch backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from benchmark.formats.checkpoint import open_checkpoint
from benchmark.nn.layers import Conv2dSame, MaxPool2dSame, static_padding
from benchmark.run import run as benchmark_run
from benchmark.runtimes.ort import OrtModel
from benchmark.runtimes.ort_export import export_onnx
from preprocessing.errors import UserError
from tests.helpers import (
    SMALL_RESNET,
    assert_same_predictions,
    inputs,
    tf_logits,
    tf_tolerance,
    unread_dataset,
    torch_model,
    validation_images,
    varied,
    write_layout,
)


@pytest.mark.parametrize("arch,size", [("mobilenet_v1", 128), ("mobilenet_v1", 224), ("resnet50", 224)])
def test_static_padding_computes_the_same_logits(arch, size, fixture_graphs, resnet_graphs):
    """Every SAME conv and pool replaced by a fixed-padding one: bit-for-bit the same logits (the same
    kernels on the same windows), and nothing SAME left."""
    pb = fixture_graphs(0.25, size, read_identities=False) if arch == "mobilenet_v1" else resnet_graphs(**SMALL_RESNET)
    model = torch_model(pb, arch)
    x = torch.from_numpy(inputs(arch, size)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        before = model(x)
        static = static_padding(model, size)
        after = static(x)
    assert not any(isinstance(m, (Conv2dSame, MaxPool2dSame)) for m in static.modules())
    assert torch.equal(before, after)


@pytest.mark.parametrize("arch", ["mobilenet_v1", "resnet50"])
def test_exported_model_in_onnxruntime_is_the_graphs_model(arch, fixture_graphs, resnet_graphs):
    """The export in ONNX Runtime against TF on the same inputs, within the float32-noise tolerance
    the torch model is held to, at batch 1 and at a larger batch (the batch dimension is free)."""
    size = 128 if arch == "mobilenet_v1" else 224
    pb = fixture_graphs(0.25, size, read_identities=False) if arch == "mobilenet_v1" else resnet_graphs(**SMALL_RESNET)
    model = torch_model(pb, arch)
    x = inputs(arch, size)
    ort = OrtModel(export_onnx(model, size, str(pb)), threads=2)
    expected = tf_logits(pb, arch, x, 2)
    tol = tf_tolerance(pb, arch, x, expected)
    assert_same_predictions(ort(x), expected, tol)
    assert_same_predictions(np.concatenate([ort(x[i:i + 1]) for i in range(len(x))]), expected, tol)
    assert any(isinstance(m, (Conv2dSame, MaxPool2dSame)) for m in model.modules())  # left as it was


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_layout(tmp_path_factory.mktemp("val"), "val_map", validation_images(24))


def config(*overrides, name="config"):
    with initialize_config_module("benchmark.conf", version_base="1.3"):
        return compose(name, overrides=["progress=false", *overrides])


@pytest.mark.parametrize("arch", ["mobilenet_v1", "resnet50"])
def test_backend_onnxruntime_on_a_frozen_graph(arch, fixture_graphs, resnet_graphs, dataset, tmp_path, capsys):
    """`python -m benchmark backend=onnxruntime reference=tf` on a frozen graph: every image agrees
    with TF, the same predictions as the torch backend, the export named in the results; also from
    a benchmark.export file and through LoadGen."""
    pb = fixture_graphs(0.25, 128, read_identities=False) if arch == "mobilenet_v1" else resnet_graphs(**SMALL_RESNET)
    common = [f"model={arch}", f"dataset.root={dataset}", f"cache_dir={tmp_path / 'cache'}", f"model.checkpoint={pb}"]
    ort = benchmark_run(config(*common, "backend=onnxruntime", "reference=tf", f"results_file={tmp_path / 'o.json'}"))
    torch_run = benchmark_run(config(*common, f"results_file={tmp_path / 't.json'}"))
    out = capsys.readouterr().out
    assert ort["backend"] == "onnxruntime" and ort["device"] == "cpu"
    assert "exported by torch.onnx" in ort["conversion"]["onnx"] and ort["conversion"]["weights_cache"]
    ref = ort["reference"]
    assert ref["other"]["backend"] == "tf" and ref["agreement"] == 24 and ref["disagreements"] == []
    assert ort["predictions"] == torch_run["predictions"] and ort["accuracy_line"] in out
    assert varied(ort["predictions"])
    assert ort["timing"]["eval_images_per_s"] > 0 and ort["timing"]["convert_s"] > 0

    from benchmark.convert import load_converted
    from benchmark.export import export as write_export

    model, _ = load_converted(arch, open_checkpoint(pb), None, tmp_path / "cache")
    exported = write_export(model, arch, open_checkpoint(pb), tmp_path / "m.safetensors", {})[0]
    common[-1] = f"model.checkpoint={exported}"
    from_export = benchmark_run(config(*common, "backend=onnxruntime", f"results_file={tmp_path / 'e.json'}"))
    assert from_export["predictions"] == ort["predictions"]

    from benchmark.loadgen.run import run as loadgen_run

    lg = loadgen_run(config(*common, "backend=onnxruntime", f"loadgen.output_dir={tmp_path / 'lg'}", name="loadgen"))
    assert lg["predictions"] == ort["predictions"]


def test_onnxruntime_backend_errors(fixture_graphs, tmp_path):
    pb = fixture_graphs(0.25, 128, read_identities=False)
    absent = unread_dataset(tmp_path / "unread")  # the errors come before any image is read
    for overrides, message in [(["backend=onnxruntime", "reference=onnxruntime"], "compares the torch backend"),
                               (["reference=onnxruntime"], "ONNX Runtime needs an .onnx checkpoint to be a reference"),
                               (["backend=openvino"], "backend=openvino runs an .onnx checkpoint"),
                               (["reference=openvino"], "reference=openvino: OpenVINO runs as the backend only")]:
        with pytest.raises(UserError) as error:
            benchmark_run(config(f"model.checkpoint={pb}", *overrides, f"dataset.root={absent}",
                                 f"cache_dir={tmp_path / 'c'}"))
        assert message in str(error.value), overrides
