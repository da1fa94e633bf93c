"""cpu_fusion=graph: the model compiled into oneDNN Graph partitions computes TensorFlow's answers,
every answer from the compiled partitions, whatever came before it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.nn import onednn_graph
from benchmark.nn.onednn_graph import OneDNNGraphModel
from tests.helpers import SMALL_RESNET, assert_same_predictions, inputs, tf_logits, tf_tolerance, torch_model

pytestmark = pytest.mark.skipif(not onednn_graph.available(), reason="this PyTorch has no oneDNN Graph fuser")


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


@pytest.fixture(scope="module")
def mobilenet(fixture_graphs):
    return torch_model(fixture_graphs(0.25, 128, read_identities=False), "mobilenet_v1")


@pytest.mark.parametrize("arch,size", [("mobilenet_v1", 128), ("resnet50", 224)])
def test_graph_model_is_the_graphs_model(arch, size, fixture_graphs, resnet_graphs):
    """Against TF within the float32-noise tolerance at the run's batch size and at 1, and against
    the eager model it came from (left as it was), through oneDNN Graph partitions."""
    pb = fixture_graphs(0.25, size, read_identities=False) if arch == "mobilenet_v1" else resnet_graphs(**SMALL_RESNET)
    model = torch_model(pb, arch)
    x = inputs(arch, size)
    graph = OneDNNGraphModel(model, size)
    with torch.inference_mode():
        eager = model(nchw(x)).numpy()
        got = graph(nchw(x)).numpy()
        one_by_one = np.concatenate([graph(nchw(x[i:i + 1])).numpy() for i in range(len(x))])
    with onednn_graph._onednn_fusion():
        optimized = str(graph.compiled[len(x)].graph_for(nchw(x)))
    assert "prim::oneDNNFusionGroup" in optimized  # it did compile partitions
    assert sorted(graph.compiled) == [1, len(x)]
    tf = tf_logits(pb, arch, x, 2)
    tol = tf_tolerance(pb, arch, x, tf)
    for logits in (got, one_by_one):
        assert_same_predictions(logits, tf, tol)
        assert np.abs(logits - eager).max() < tol


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no bfloat16 support "
                    "in oneDNN (precision=bf16 is refused there)")
def test_bf16_compiles_into_bf16_partitions(mobilenet):
    """precision=bf16's compiled model: bf16 partitions (autocast's casts traced into the script),
    as far from exact fp32 as bf16 run op by op under autocast is (both round to 8-bit mantissas, in
    other orders: within twice its largest difference), and not float32 in disguise (it moves)."""
    x = nchw(inputs("mobilenet_v1", 128))
    with torch.inference_mode():
        exact = mobilenet(x)
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            eager = mobilenet(x).float()
        graph = OneDNNGraphModel(mobilenet, 128, torch.bfloat16)
        got = graph(x)
        repeated = graph(x)
    with onednn_graph._onednn_fusion():
        optimized = str(graph.compiled[len(x)].graph_for(x))
    assert "prim::oneDNNFusionGroup" in optimized and "BFloat16(" in optimized
    assert got.dtype == torch.bfloat16 and torch.equal(got, repeated)
    eager_off = (eager - exact).abs().max().item()
    off = (got.float() - exact).abs().max().item()
    assert 0 < off <= 2 * eager_off, (off, eager_off)


def test_first_answer_comes_from_the_compiled_partitions(mobilenet):
    """TorchScript runs a new shape unfused first: the warm-up takes those calls, so the first
    real answer is bit for bit the later ones (without the warm-up it is the unfused graph's)."""
    x = nchw(inputs("mobilenet_v1", 128)[:1])
    with torch.inference_mode():
        graph = OneDNNGraphModel(mobilenet, 128)
        answers = [graph(x) for _ in range(3)]
    for a in answers[1:]:
        assert torch.equal(a, answers[0])


def test_other_batch_sizes_run_padded_at_the_runs_size(mobilenet):
    """A partial batch and sizes above the run's run as batches of the run's size padded with zero
    rows: each image's answer is bit for bit its answer in a full batch; two scripts, whatever came."""
    x = nchw(np.random.default_rng(1).uniform(-1, 1, (8, 128, 128, 3)).astype(np.float32))
    graph = OneDNNGraphModel(mobilenet, 128)
    with torch.inference_mode():
        full = torch.cat([graph(x[:4]), graph(x[4:])])  # the run's size: 4
        for n in (1, 3, 6, 2, 5, 8):
            got = graph(x[:n])
            if n == 1:
                assert np.abs((got - full[:1]).numpy()).max() < 1e-4  # its own script: batch 1's kernels
            else:
                assert torch.equal(got, full[:n]), n
    assert sorted(graph.compiled) == [1, 4]
    assert not torch.jit.onednn_fusion_enabled()  # the process-wide switch is left as it was
    # rows computed: 4 + 4, then 1, 3 -> 4, 6 -> 4 + 4, 2 -> 4, 5 -> 4 + 4, 8 -> 4 + 4
    assert (graph.rows, graph.padding) == (8 + 1 + 4 + 8 + 4 + 8 + 8, 1 + 2 + 2 + 3)


def test_declared_sizes_run_as_they_are(mobilenet):
    """A size declared beforehand (LoadGen's MultiStream queries) gets its own script: no padded rows
    computed, and its answers are those of its own kernels."""
    x = nchw(np.random.default_rng(1).uniform(-1, 1, (8, 128, 128, 3)).astype(np.float32))
    graph = OneDNNGraphModel(mobilenet, 128)
    graph.sizes.add(3)
    with torch.inference_mode():
        full = graph(x[:4])
        got = graph(x[:3])
    assert sorted(graph.compiled) == [3, 4] and (graph.rows, graph.padding) == (7, 0)
    assert np.abs((got - full[:3]).numpy()).max() < 1e-4


def test_refuses_another_image_size(mobilenet):
    with pytest.raises(ValueError, match="compiled for 128 x 128"):
        OneDNNGraphModel(mobilenet, 128)(torch.zeros(2, 3, 160, 160))
