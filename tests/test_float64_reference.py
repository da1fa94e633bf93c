"""The float64 reference behind the conversion tolerance (tests/helpers.py): the frozen graph run by
TensorFlow in float64 is the graph's own function. Two independent float64 evaluations, TensorFlow
on the rewritten graph and the converted PyTorch model in float64, agree far below float32's error;
and TensorFlow's float32 logits are near it, but not equal (an error to scale the tolerance by)."""

import numpy as np
import pytest
import torch

from tests.helpers import SMALL_RESNET, TENSORS, inputs, tf_float64_logits


@pytest.mark.parametrize("arch,kwargs", [("mobilenet_v1", {}), ("resnet50", {"layout": "NCHW", **SMALL_RESNET})])
def test_float64_graph_is_the_graphs_function(arch, kwargs, fixture_graphs, resnet_graphs):
    from benchmark.convert import build_model, convert
    from benchmark.formats.checkpoint import open_checkpoint
    from benchmark.formats.frozen_graph import FrozenGraph
    from benchmark.runtimes.tf import TFGraphModel

    size = 128 if arch == "mobilenet_v1" else 224
    pb = fixture_graphs(0.25, size) if arch == "mobilenet_v1" else resnet_graphs(**kwargs)  # FusedBatchNorm, NCHW
    x = inputs(arch, size)
    tf64 = tf_float64_logits(pb, *TENSORS[arch], x)
    spec, state = convert(arch, FrozenGraph.from_checkpoint(open_checkpoint(pb)))
    model = build_model(arch, spec, state).double()  # batch norms unfolded: folding rounds in float32
    with torch.inference_mode():
        torch64 = model(torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2)).numpy()
    from benchmark.runtimes.tf import NCHWUnsupported

    try:
        tf32 = TFGraphModel(FrozenGraph.from_checkpoint(open_checkpoint(pb)), *TENSORS[arch], size)(x)
    except NCHWUnsupported as e:  # an AVX2 CPU: TF's oneDNN kernels are off, its own run NHWC only
        pytest.skip(str(e))
    scale = np.abs(tf64).max()
    float32_error = np.abs(tf32 - tf64).max()
    assert np.abs(torch64 - tf64).max() < 1e-3 * float32_error  # float64 against float64
    assert 0 < float32_error < 1e-4 * scale
