"""A model compiled once per batch size (oneDNN Graph scripts on CPU, CUDA graphs), with every
answer independent of the batch it came in.

A compiled form is made for the first batch size above 1 seen (the run's), for 1, and for any size
declared beforehand (`sizes`: the batches LoadGen's MultiStream queries come in, the powers of two
its Server batches are padded to). A batch of another size (a last partial batch, a Server batch)
runs at the smallest of those sizes that holds it, padded with zero rows:
the rows of a batch do not mix, so each image's answer is bit for bit its answer in a full batch, and
no kernel choice a run did not plan for (with its own last digits) enters it. The padding is
counted (`rows`, `padding`): LoadGen states it with its latencies.
"""

from __future__ import annotations

import torch


class CompiledPerBatchSize:
    """Subclasses make the compiled form for one batch size (`compile`) and run it (`run`)."""

    image_size: int

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.compiled: dict[int, object] = {}  # batch size -> its compiled form
        self.main: int | None = None  # the first batch size above 1 seen
        self.sizes: set[int] = set()  # other sizes run as they are, not padded
        self.rows = self.padding = 0  # rows computed, and how many of them were zero padding

    def compile(self, n: int):
        raise NotImplementedError

    def run(self, compiled, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def for_size(self, n: int):
        if n not in self.compiled:
            self.compiled[n] = self.compile(n)
        return self.compiled[n]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"input of size {tuple(x.shape[-2:])}: the model was compiled for "
                             f"{self.image_size} x {self.image_size}")
        n = x.shape[0]
        if self.main is None and n > 1:
            self.main = n
        if n in (self.main, 1) or n in self.sizes:
            self.rows += n
            return self.run(self.for_size(n), x)
        outs = []
        for part in x.split(self.main):
            k = part.shape[0]
            size = min(s for s in (self.main, *self.sizes) if k <= s <= self.main)
            if k < size:
                part = torch.cat([part, part.new_zeros(size - k, *part.shape[1:])])
            self.rows += size
            self.padding += size - k
            outs.append(self.run(self.for_size(size), part)[:k])
        return torch.cat(outs)
