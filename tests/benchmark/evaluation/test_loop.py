"""The evaluation loop keeps one batch in flight on a device while it reads the next, and still
puts every image's logits in its own row, exactly once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.evaluation.loop import logits
from benchmark.evaluation.normalize import Normalizer
from benchmark.runtimes.pytorch import TorchRuntime


class Deferred:
    """Logits not ready until `result` (as a CUDA batch still computing)."""
    done = False

    def __init__(self, runtime, x):
        self.runtime, self.x = runtime, x

    def result(self):
        self.runtime.in_flight.remove(self)
        return self.x.reshape(len(self.x), -1)[:, :5] * 2


class AsynchronousRuntime:
    """A runtime whose batches finish later than they are sent; records how many were in flight."""
    name, device = "deferred", "cpu"

    def __init__(self):
        self.in_flight, self.most = [], 0

    def inputs(self, crops):
        return crops.astype(np.float32)

    def submit(self, x):
        pending = Deferred(self, x)
        self.in_flight.append(pending)
        self.most = max(self.most, len(self.in_flight))
        return pending


@pytest.mark.parametrize("n,batch", [(10, 4), (8, 4), (3, 4), (1, 1), (0, 4)])
def test_batches_in_flight_land_in_their_rows(n, batch):
    images = np.random.default_rng(n).integers(0, 255, (n, 2, 2, 3), dtype=np.uint8)
    runtime = AsynchronousRuntime()
    timing = {}
    out = logits(runtime, images, batch, False, timing)
    if n == 0:  # an empty share (more torchrun ranks than images): an empty array, not None
        assert isinstance(out, np.ndarray) and out.shape == (0, 0)
        return
    assert np.array_equal(out, images.reshape(n, -1)[:, :5].astype(np.float32) * 2)
    assert runtime.most == min(2, -(-n // batch)) and not runtime.in_flight  # two at most; all collected
    assert timing["eval_images_per_s"] > 0


def test_torch_runtime_on_cpu_computes_when_called():
    """On the CPU a batch is computed when sent: the loop collects it at once (nothing in flight)."""
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 7))
    runtime = TorchRuntime(model, Normalizer("mobilenet"), "cpu")
    crops = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    pending = runtime.submit(runtime.inputs(crops))
    assert pending.done
    assert np.array_equal(pending.result(), runtime(runtime.inputs(crops)))
    assert np.array_equal(logits(runtime, crops, 2, False), pending.result())
