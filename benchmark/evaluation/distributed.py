"""Evaluation across processes and machines through `torch.distributed` (launched by `torchrun`):
each rank evaluates a contiguous share of the cached crops and rank 0 gathers the logits in image
order, each image exactly once (no padding with repeats, as a `DistributedSampler` would add).

Without torchrun's environment (`WORLD_SIZE` unset or 1) everything is one process, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    backend: str | None = None  # gloo (CPU) or nccl (CUDA); None for one process
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's images of `n`: contiguous, sizes differing by at most one, every image once."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def gather(self, part: np.ndarray) -> np.ndarray | None:
        """Every rank's part, concatenated in rank order (image order), on rank 0; None elsewhere."""
        if self.size == 1:
            return part
        import torch.distributed as dist

        parts = [None] * self.size if self.main else None
        dist.gather_object(part, parts, dst=0)
        if not self.main:
            return None
        # a rank with no image (more ranks than images) sends an array of shape (0, 0)
        rows = [p for p in parts if len(p)]
        return np.concatenate(rows) if rows else parts[0]

    def close(self) -> None:
        """Ends the process group once every collective is done (rank 0 then writes alone)."""
        if self.size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def to_dict(self) -> dict:
        return {"world_size": self.size, "backend": self.backend}


def world(device: str) -> World:
    """This process's place in a torchrun launch (one process when there is none): the process
    group is started with gloo for CPU runs and NCCL for CUDA runs."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(local_rank)  # NCCL's collectives use the current device: this rank's GPU
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), dist.get_backend(), local_rank)
