"""cpu_fusion=true: the folded model with oneDNN-fused convolutions computes what the eager model
and TensorFlow compute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.evaluation.loop import logits as predictor_logits
from benchmark.evaluation.normalize import Normalizer
from benchmark.formats.checkpoint import open_checkpoint
from benchmark.formats.frozen_graph import FrozenGraph
from benchmark.nn import cpu_fusion, onednn_graph
from benchmark.run import run as benchmark_run
from benchmark.runtimes.pytorch import TorchRuntime
from tests.helpers import (
    SMALL_RESNET,
    assert_same_predictions,
    config,
    inputs,
    tf_logits,
    tf_tolerance,
    torch_model,
    validation_images,
    varied,
    write_layout,
)

# Only the tests that run the fused op need it (a PyTorch without it keeps the eager model, tested
# by the rest of the suite); the others here run everywhere.
needs_fusion = pytest.mark.skipif(not cpu_fusion.available(), reason="this PyTorch has no oneDNN fused convolution")


@needs_fusion
@pytest.mark.parametrize("arch,size", [("mobilenet_v1", 128), ("resnet50", 224)])
def test_fused_model_is_the_graphs_model(arch, size, fixture_graphs, resnet_graphs):
    """Against TF within the float32-noise tolerance, and against the eager model it came from (the
    same kernels and the same float32 add and clamp: equal here, held to the same tolerance), at
    batch 1 and at 6 (weights packed for each), with the eager model left as it was."""
    pb = fixture_graphs(0.25, size, read_identities=False) if arch == "mobilenet_v1" else resnet_graphs(**SMALL_RESNET)
    model = torch_model(pb, arch)
    x = inputs(arch, size)
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    fused = cpu_fusion.fuse_for_cpu(model, size)
    assert sum(isinstance(m, cpu_fusion.FusedConv2d) for m in fused.modules()) == \
        sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) - (arch == "mobilenet_v1")  # not the classifier
    assert not any(isinstance(m, cpu_fusion.FusedConv2d) for m in model.modules())
    with torch.inference_mode():
        eager = model(nchw).numpy()
        got = fused(nchw).numpy()
        one_by_one = np.concatenate([fused(nchw[i:i + 1]).numpy() for i in range(len(x))])
    tf = tf_logits(pb, arch, x, 2)
    tol = tf_tolerance(pb, arch, x, tf)
    for logits in (got, one_by_one):
        assert_same_predictions(logits, tf, tol)
        assert_same_predictions(logits, eager, tol)
        assert np.abs(logits - eager).max() < tol


def test_fusion_needs_folded_batch_norms(fixture_graphs):
    from benchmark.convert import build_model, convert

    pb = fixture_graphs(0.25, 128, read_identities=False)
    spec, state = convert("mobilenet_v1", FrozenGraph.from_checkpoint(open_checkpoint(pb)))
    with pytest.raises(ValueError, match="folded"):
        cpu_fusion.fuse_for_cpu(build_model("mobilenet_v1", spec, state), 128)


@needs_fusion
def test_predictor_fuses_once_and_runs_any_batch(fixture_graphs):
    pb = fixture_graphs(0.25, 128, read_identities=False)
    predict = TorchRuntime(torch_model(pb, "mobilenet_v1"), Normalizer("mobilenet"), "cpu", fusion="ops")
    crops = np.random.default_rng(0).integers(0, 256, (7, 128, 128, 3), dtype=np.uint8)
    a = predictor_logits(predict, crops, 3, False)  # batches of 3, 3, 1
    fused = predict.fused
    b = predictor_logits(predict, crops, 7, False)
    assert sum(isinstance(m, cpu_fusion.FusedConv2d) for m in fused.modules()) == 27  # it did fuse: every conv
    assert predict.fused is fused and np.abs(a - b).max() < 1e-4


@needs_fusion
def test_runs_record_fusion(fixture_graphs, tmp_path):
    pb = fixture_graphs(0.25, 128, read_identities=False)
    root = write_layout(tmp_path / "val", "val_map", validation_images(4))
    results = {}
    runs = {"graph": [], "fused": ["cpu_fusion=true"], "eager": ["cpu_fusion=false"], "graph_order": ["fold_bn=false"]}
    for name, extra in runs.items():
        results[name] = benchmark_run(config(f"model.checkpoint={pb}", f"dataset.root={root}", "device=cpu",
                                             f"cache_dir={tmp_path / 'c'}", f"results_file={tmp_path / name}.json",
                                             *extra))
    assert [r["cpu_fusion"] for r in results.values()] == \
        ["graph" if onednn_graph.available() else True, True, False, False]
    assert [r["cuda_graphs"] for r in results.values()] == [False] * 4  # CPU runs: no CUDA graphs
    assert results["graph"]["predictions"] == results["fused"]["predictions"] == results["eager"]["predictions"] \
        == results["graph_order"]["predictions"]
    assert varied(results["fused"]["predictions"])


@needs_fusion
def test_a_pytorch_without_the_graph_fuser_says_what_ran_instead(fixture_graphs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(onednn_graph, "available", lambda: False)
    pb = fixture_graphs(0.25, 128, read_identities=False)
    root = write_layout(tmp_path / "val", "val_map", validation_images(2))
    r = benchmark_run(config(f"model.checkpoint={pb}", f"dataset.root={root}", "device=cpu",
                             f"cache_dir={tmp_path / 'c'}", f"results_file={tmp_path / 'r.json'}"))
    assert r["cpu_fusion"] is True
    assert "cpu_fusion=graph: this PyTorch has no oneDNN Graph fuser" in capsys.readouterr().err


def test_cpu_fusion_values():
    from benchmark.runtimes.pytorch import cpu_fusion_mode
    from preprocessing.errors import ConfigError

    assert [cpu_fusion_mode(v) for v in ("graph", True, False, "true", "False")] == ["graph", "ops", None, "ops", None]
    with pytest.raises(ConfigError, match="cpu_fusion=fast: expected graph, true or false"):
        cpu_fusion_mode("fast")


def test_cuda_bench_random_models_have_mlperfs_structure(fixture_graphs, resnet_graphs):
    """`benchmark.bench.cuda`'s ARCH=random (for timing where the weights cannot travel): the folded
    structure of MLPerf's MobileNet-v1 1.0/224 and ResNet-50, parameter for parameter."""
    from benchmark.bench.cuda import random_model

    for arch, pb in (("mobilenet_v1", fixture_graphs(1.0, 224, read_identities=False)), ("resnet50", resnet_graphs())):
        converted = torch_model(pb, arch)
        model = random_model(arch)
        assert {k: v.shape for k, v in model.state_dict().items()} == \
            {k: v.shape for k, v in converted.state_dict().items()}
        with torch.inference_mode():
            assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 1001)


@needs_fusion
@pytest.mark.parametrize("arch,size", [("mobilenet_v1", 128), ("resnet50", 224)])
def test_weights_packed_for_two_batch_sizes_serve_every_size(arch, size, fixture_graphs, resnet_graphs):
    """Server's dynamic batching and a last partial batch bring sizes the warm-up never ran: they
    take the run's pack instead of packing inside a timed query and keeping a copy of the weights
    per size. Every size gives the eager model's logits (a pack is a layout, not other numbers)."""
    pb = fixture_graphs(0.25, size, read_identities=False) if arch == "mobilenet_v1" else resnet_graphs(**SMALL_RESNET)
    model = torch_model(pb, arch)
    nchw = torch.from_numpy(inputs(arch, size)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    fused = cpu_fusion.fuse_for_cpu(model, size)
    convs = [m for m in fused.modules() if isinstance(m, cpu_fusion.FusedConv2d)]
    with torch.inference_mode():
        eager = model(nchw).numpy()
        for n in (4, 1, 3, 6, 2, 5):  # the run's size, the warm-up's 1, then sizes never warmed
            got = fused(nchw[:n]).numpy()
            assert np.abs(got - eager[:n]).max() <= 1e-5 * np.abs(eager).max(), n
            assert (got.argmax(1) == eager[:n].argmax(1)).all()
    assert {tuple(c._packed) for c in convs} == {(4, 1)}  # two packs per convolution, whatever came
