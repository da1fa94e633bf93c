"""The model's forward recorded as CUDA graphs and replayed (cuda_graphs=true).

Each batch the eager model launches one kernel per operator (hundreds for ResNet-50) from Python;
a CUDA graph records those launches once per batch size and replays them with one call, so the GPU
is not left waiting on the host between kernels.

Exactness: a replay runs the kernels that were recorded, and the recording is made after warm-up
calls of the same forward at the same shape (cuDNN's heuristic algorithm choice, TF32 off and
determinism as the runtime set them), so a replay's answers are bit for bit the eager forward's at
that batch size (tested on CUDA). Which batch sizes get a graph: nn/compiled.py.
"""

from __future__ import annotations

from typing import Callable

import torch

from benchmark.nn.compiled import CompiledPerBatchSize

WARM_UP_CALLS = 2  # cuDNN's workspaces and algorithm choice happen here, outside the recording


class CUDAGraphModel(CompiledPerBatchSize):
    """`forward` (the model on a CUDA device, with its autocast if any) on NCHW float32 batches of
    `image_size`, one CUDA graph per batch size. `forward` must not depend on anything but its input
    (a recorded graph replays what it did at recording)."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], image_size: int, device: torch.device):
        super().__init__(image_size)
        self.forward, self.device = forward, torch.device(device)
        self.pool = None  # one memory pool for every batch size's graph (only one runs at a time)

    def compile(self, n: int):
        with torch.cuda.device(self.device):
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            static_in = torch.zeros(n, 3, self.image_size, self.image_size, device=self.device)
            static_in = static_in.contiguous(memory_format=torch.channels_last)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capturing stream, as CUDA graphs require
                for _ in range(WARM_UP_CALLS):
                    self.forward(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, pool=self.pool):
                    static_out = self.forward(static_in)
            except RuntimeError as e:
                raise RuntimeError(f"recording the forward as a CUDA graph at batch size {n} failed ({e}); "
                                   "cuda_graphs=false runs the eager model") from e
        return graph, static_in, static_out

    def run(self, compiled, x: torch.Tensor) -> torch.Tensor:
        graph, static_in, static_out = compiled
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()  # the next replay writes static_out again
