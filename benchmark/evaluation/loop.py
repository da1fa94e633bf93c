"""Evaluation stage: every cached crop's logits from a runtime (runtimes/), a batch at a time."""

from __future__ import annotations

import mmap
import sys
import time
from collections import deque

import numpy as np
from tqdm import tqdm


class Rows:
    """Rows `index` of a (memory-mapped) array, read a batch at a time: the readable images when
    some were skipped."""

    def __init__(self, array: np.ndarray, index: np.ndarray):
        self.array, self.index = array, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.array[self.index[rows]]


def part(images, rows: slice):
    """Rows of the crops to evaluate, still read a batch at a time (a memory map stays one)."""
    if rows == slice(0, len(images)):
        return images
    if isinstance(images, Rows):
        return Rows(images.array, images.index[rows])
    return images[rows]


def read_batch(images, start: int, stop: int) -> np.ndarray:
    """A copy of rows start:stop. The memory map's pages are then dropped from this process (they
    stay in the page cache), so streaming 50,000 cached images keeps resident memory near one batch
    instead of growing with every page read."""
    batch = np.array(images[start:stop])
    mapping = getattr(images.array if isinstance(images, Rows) else images, "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
    return batch


class LoopTimer:
    """An evaluation loop's seconds, and its images/s without the first batch (kernel selection and
    first-call allocations: a warm-up, left out as timm's validate leaves it out)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.first: tuple[float, int] | None = None  # when the first batch ended, its images

    def batch_done(self, images_so_far: int) -> None:
        if self.first is None:
            self.first = (time.perf_counter(), images_so_far)

    def result(self, images: int) -> dict:
        end = time.perf_counter()
        first_end, first_n = self.first or (end, images)
        rate = (images - first_n) / (end - first_end) if images > first_n else images / (end - self.start)
        return {"eval_s": round(end - self.start, 3), "eval_images_per_s": round(rate, 2)}


def logits(runtime, images, batch_size: int, progress: bool = True, timing: dict | None = None) -> np.ndarray:
    """Every image's logits from `runtime` (runtimes.Runtime); `timing`, if given, gets the loop's
    eval_s and eval_images_per_s; no image gives an array of shape (0, 0). A batch still computing
    on the device stays in flight while the next batch is read from the cache and sent (one at a
    time, so at most two batches' inputs and logits live on the device)."""
    timer = LoopTimer()
    out = None  # one array for all logits, filled in place (no pile of small ones between batches)
    n = len(images)
    in_flight: deque = deque()
    with tqdm(total=n, desc=f"{runtime.name} {runtime.device}", unit="img", disable=not progress,
              file=sys.stderr) as bar:

        def collect():
            nonlocal out
            start, stop, pending = in_flight.popleft()
            batch = pending.result()
            if out is None:
                out = np.empty((n, batch.shape[1]), np.float32)
            out[start:stop] = batch
            bar.update(stop - start)
            timer.batch_done(stop)

        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            # torch on CUDA returns before the device is done; the other runtimes compute the batch here
            in_flight.append((start, stop, runtime.submit(runtime.inputs(read_batch(images, start, stop)))))
            # the previous batch is collected once this one is sent: its device work overlapped the reading
            while in_flight and (in_flight[0][2].done or len(in_flight) > 1):
                collect()
        while in_flight:
            collect()
    if timing is not None:
        timing.update(timer.result(n))
    # no image (a torchrun rank whose share is empty): an empty array, its width unknown
    return out if out is not None else np.empty((0, 0), np.float32)
