"""cuda_graphs=true: the forward recorded as CUDA graphs and replayed computes the eager model's
logits bit for bit, and the overlapped evaluation loop the waiting one's (CUDA only: run by
results/cuda/make.sh on a machine with a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.evaluation.loop import logits
from benchmark.evaluation.normalize import Normalizer
from benchmark.runtimes.pytorch import TorchRuntime
from tests.helpers import config, crops, validation_images, write_layout

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (PyTorch sees none)")]


@pytest.mark.parametrize("arch", ["mobilenet_v1", "resnet50"])
def test_cuda_graphs_are_the_eager_model_bit_for_bit(arch):
    """MLPerf's two structures (random weights: no TensorFlow needed on the GPU machine)."""
    from benchmark.bench.cuda import Synchronous, random_model

    model = random_model(arch)
    normalize = Normalizer("mobilenet" if arch == "mobilenet_v1" else "vgg")
    images = crops(10, 224)
    graphs = TorchRuntime(model, normalize, "cuda", image_size=224, cuda_graphs=True)
    got = logits(graphs, images, 4, False)  # 4, 4, then 2 padded to 4
    assert sorted(graphs.fused.compiled) == [4]
    eager = TorchRuntime(model, normalize, "cuda", image_size=224)
    assert np.array_equal(got[:8], logits(Synchronous(eager), images[:8], 4, False))
    # the padded last batch: each image's answer is its answer in a full batch
    assert np.array_equal(got[8:], logits(graphs, images[6:], 4, False)[2:])
    one = logits(graphs, images[:3], 1, False)
    assert np.array_equal(one, logits(Synchronous(eager), images[:3], 1, False))
    assert sorted(graphs.fused.compiled) == [1, 4]
    assert len({int(i) for i in got.argmax(1)}) > 1  # answers that can differ


def test_cuda_runs_record_cuda_graphs(fixture_graphs, tmp_path):
    pytest.importorskip("tensorflow", reason="the test's frozen graph is built with TensorFlow")
    from benchmark.run import run

    pb = fixture_graphs(0.25, 128, read_identities=False)
    root = write_layout(tmp_path / "val", "val_map", validation_images(6))
    results = {graphs: run(config(f"model.checkpoint={pb}", f"dataset.root={root}", "device=cuda", "batch_size=4",
                                  f"cache_dir={tmp_path / 'c'}", f"results_file={tmp_path / str(graphs)}.json",
                                  f"cuda_graphs={graphs}"))
               for graphs in ("true", "false")}
    assert [r["cuda_graphs"] for r in results.values()] == [True, False]
    assert results["true"]["predictions"] == results["false"]["predictions"]
