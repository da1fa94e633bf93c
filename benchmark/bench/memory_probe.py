"""python -m benchmark.bench.memory_probe CACHE.npy harness|plain BATCH: evaluation streaming a cache
with a model that costs nothing; prints this process's peak resident memory (bytes)."""

import sys

import numpy as np
import torch

from benchmark.evaluation.loop import logits
from benchmark.evaluation.normalize import Normalizer
from benchmark.runtimes.pytorch import TorchRuntime

images = np.load(sys.argv[1], mmap_mode="r")
model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 1001))
if sys.argv[2] == "plain":  # the baseline: slicing the memory map, pages kept
    import benchmark.evaluation.loop as ev
    ev.read_batch = lambda a, i, j: np.array(a[i:j])
logits(TorchRuntime(model, Normalizer("mobilenet"), "cpu"), images, int(sys.argv[3]), False)
# VmHWM is this program's own peak; ru_maxrss would also count the parent it was forked from.
print(next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
