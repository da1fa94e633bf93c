"""ResNet-50 v1.5: MLPerf's graph structure to PyTorch, exact, with torchvision's names."""

import numpy as np
import pytest
import torch

from benchmark.convert import build_model, convert
from benchmark.formats.checkpoint import open_checkpoint
from benchmark.formats.frozen_graph import FrozenGraph, GraphError, parse_graph_def
from benchmark.nn.layers import fold_batch_norms
from benchmark.runtimes.tf import TFGraphModel
from tests.helpers import TENSORS, resnet_inputs, tf_tolerance

INPUT, LOGITS = TENSORS["resnet50"]
SMALL = dict(width=16, depth=(1, 2, 1, 1))  # same structure, quick to run


def converted(path):
    graph = FrozenGraph.from_checkpoint(open_checkpoint(path))
    spec, state = convert("resnet50", graph)
    return graph, spec, state


def run_both(path, x, fold=False):
    graph, spec, state = converted(path)
    model = build_model("resnet50", spec, state)
    if fold:
        fold_batch_norms(model)
    expected = TFGraphModel(graph, INPUT, LOGITS, x.shape[1])(x)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        got = model(xt).numpy()
    return spec, model, got, expected, tf_tolerance(path, "resnet50", x, expected)


def assert_agree(got, expected, tol):
    """Within the float32 tolerance (tests.helpers.FLOAT32_NOISE_FACTOR), and the same top-1 everywhere."""
    diff = np.abs(got - expected).max()
    assert diff < tol, f"max |torch - tf| = {diff:.3g} >= {tol:.3g}"
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_full_fixture_structure_and_agreement(resnet_graphs):
    x = resnet_inputs(16, offset=2)
    spec, model, got, expected, tol = run_both(resnet_graphs(), x)
    assert [len(stage) for stage in spec.layers] == [3, 4, 6, 3]
    assert spec.stem.padding == [3, 3, 3, 3] and spec.stem.stride == 2 and spec.stem.kernel == 7
    assert (spec.pool_kernel, spec.pool_stride) == (3, 2)
    firsts = [stage[0] for stage in spec.layers]
    assert [b.conv2.stride for b in firsts] == [1, 2, 2, 2]  # v1.5: stride on the 3x3
    assert [b.downsample.stride for b in firsts] == [1, 2, 2, 2]
    assert [b.conv2.padding for b in firsts[1:]] == [[1, 1, 1, 1]] * 3
    assert all(c.eps == pytest.approx(1.001e-5) for c in (spec.stem, firsts[0].conv1))
    assert spec.num_classes == 1001 and spec.image_size == 224
    assert firsts[1].downsample.name == "resnet_model/conv2d_11"  # projection numbered first
    names = set(model.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.bias",
            "layer4.2.conv3.weight", "fc.weight", "fc.bias"} <= names
    assert len(set(got.argmax(1))) > 8  # the fixture's predictions are not degenerate
    assert_agree(got, expected, tol)


def test_folded_batch_norms_agree_with_tensorflow(resnet_graphs):
    """The evaluation default (fold_bn=true): every batch norm folded into its conv. Rounding each
    scaled filter weight once more moves the logits a little further from TF's (1.6-1.8 times the
    float32 noise, graph order 1.1-1.3 times), still far below a conversion fault."""
    _, model, got, expected, tol = run_both(resnet_graphs(), resnet_inputs(16, offset=2), fold=True)
    assert not [m for m in model.modules() if type(m).__name__ == "TFBatchNorm2d"]
    assert model.layer1[0].downsample[0].bias is not None and model.conv1.bias is not None
    assert_agree(got, expected, tol)


@pytest.mark.parametrize("variant", [dict(bn_op="FusedBatchNormV2"), dict(bn_op="FusedBatchNormV3"),
                                     dict(read_identities=False), dict(image_size=193)])
def test_export_variants(resnet_graphs, variant):
    x = resnet_inputs(8, offset=3, size=variant.get("image_size", 224))
    spec, _, got, expected, tol = run_both(resnet_graphs(**SMALL, **variant), x)
    assert spec.image_size == variant.get("image_size", 224)
    assert_agree(got, expected, tol)


def test_channels_first_export_converts_to_the_same_model(resnet_graphs):
    """NHWC input transposed to NCHW inside the graph. TF's CPU kernels cannot run NCHW max pools,
    so the check is that it converts to exactly the model of the NHWC graph with the same weights."""
    _, spec_nhwc, state_nhwc = converted(resnet_graphs(**SMALL))
    _, spec_nchw, state_nchw = converted(resnet_graphs(**SMALL, layout="NCHW", bn_op="FusedBatchNormV3"))
    # Same model; only the recorded TF tensor names of the batch norms differ (V3 op names).
    assert {**spec_nchw.to_dict(), "taps": None} == {**spec_nhwc.to_dict(), "taps": None}
    assert [m for m, _ in spec_nchw.taps] == [m for m, _ in spec_nhwc.taps]
    assert state_nchw.keys() == state_nhwc.keys()
    assert all(np.array_equal(state_nchw[k], state_nhwc[k]) for k in state_nhwc)


def renamed(path, rename):
    """The graph with every node renamed by `rename`, wiring unchanged."""
    graph_def = parse_graph_def(path.read_bytes(), str(path))
    for node in graph_def.node:
        node.name = rename(node.name)
        for i, inp in enumerate(node.input):
            ctrl = "^" if inp.startswith("^") else ""
            base, _, port = inp.lstrip("^").partition(":")
            node.input[i] = ctrl + rename(base) + (":" + port if port else "")
    return FrozenGraph(graph_def, "renamed")


def test_other_naming_converts_by_data_flow(resnet_graphs):
    path = resnet_graphs(**SMALL)
    _, spec, state = converted(path)
    graph = renamed(path, lambda n: n.replace("resnet_model/conv2d", "net/conv")
                    .replace("resnet_model/batch_normalization", "net/bn"))
    other_spec, other_state = convert("resnet50", graph)
    assert other_state.keys() == state.keys()
    assert all(np.array_equal(other_state[k], state[k]) for k in state)
    assert other_spec.stem.name == "net/conv"


def test_numbering_that_contradicts_the_wiring_fails_naming_the_node(resnet_graphs):
    swap = {"resnet_model/conv2d_1": "resnet_model/conv2d_2", "resnet_model/conv2d_2": "resnet_model/conv2d_1"}

    def rename(name):
        head, _, tail = name.partition("/kernel")
        return swap.get(head, head) + _ + tail if _ else name
    graph = renamed(resnet_graphs(**SMALL), rename)
    with pytest.raises(GraphError, match=r"conv2d_[12]/Conv2D.*expected 'resnet_model/conv2d_[12]/kernel'"):
        convert("resnet50", graph)


def test_mobilenet_graph_given_as_resnet_is_an_error(fixture_graphs):
    graph = FrozenGraph.from_checkpoint(open_checkpoint(fixture_graphs(0.25, 128, read_identities=False)))
    with pytest.raises(GraphError, match=r"Conv2d_0/Relu6': expected op Relu, found Relu6.*model=resnet50"):
        convert("resnet50", graph)


def test_stock_torchvision_resnet50_disagrees(resnet_graphs):
    """The pitfall users hit: the same weights in torchvision's resnet50 load with strict=True but
    compute something else (symmetric max-pool padding, BN epsilon 1e-5, textbook BN arithmetic)."""
    import torchvision

    x = resnet_inputs(16, offset=2)  # the batch of the agreement tests above: their float64 reference
    _, model, got, expected, tol = run_both(resnet_graphs(), x)
    stock = torchvision.models.resnet50(num_classes=1001).eval()
    state = dict(model.state_dict())
    state.update({k: torch.tensor(0) for k in stock.state_dict() if k.endswith("num_batches_tracked")})
    stock.load_state_dict(state, strict=True)
    with torch.inference_mode():
        theirs = stock(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    ours_diff = np.abs(got - expected).max()
    stock_diff = np.abs(theirs - expected).max()
    flips = int((theirs.argmax(1) != expected.argmax(1)).sum())
    print(f"stock torchvision: max |logit diff| {stock_diff:.3g} (ours {ours_diff:.3g}), "
          f"{flips}/{len(x)} top-1 changes")
    assert stock_diff > 1000 * ours_diff and stock_diff > 100 * tol
