"""Evaluation stage: logits for every cached crop, from either backend, and MLPerf's scoring."""

from __future__ import annotations

import ctypes
import mmap
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from .normalize import Normalizer, TorchNormalizer

NUM_CLASSES = 1000


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} asked for, but PyTorch sees no CUDA device")
    return torch.device(name)


def default_batch_size(device: torch.device | str) -> int:
    """Measured on a 2-core CPU (issue 7's note): at 16 a batch's activations stay in the caches and
    both models (and the TF backend) run faster than at 8, 32 or 64; a GPU wants large batches."""
    return 256 if torch.device(device).type == "cuda" else 16


def exact_cuda() -> None:
    """TF32 changes results at the last digit and cuDNN may pick non-deterministic kernels: off."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class Rows:
    """Rows `index` of a (memory-mapped) array, read a batch at a time: the readable images when
    some were skipped."""

    def __init__(self, array: np.ndarray, index: np.ndarray):
        self.array, self.index = array, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.array[self.index[rows]]


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


def _batches(n: int, batch_size: int, desc: str, progress: bool, timer: LoopTimer | None = None):
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield start, stop
            bar.update(stop - start)
            if timer is not None:
                timer.batch_done(stop)


def reuse_freed_memory() -> None:
    """Keep freed memory in the process (glibc): by default glibc hands every large block back to the
    system when it is freed, and PyTorch allocates each operator's output afresh, so every large
    activation was page-faulted in (and zeroed by the kernel) again on every batch: 5-8 million page
    faults and 11-18 s of system time in a 1,000-image ResNet-50 pass at batch 16, against 0.2-0.6
    million without. Measured: 1.1-1.4x the images/s on both models. No effect elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # malloc.h
    libc.mallopt(M_MMAP_MAX, 0)  # large blocks from the heap, reused, not mmap'ed and unmapped each time
    libc.mallopt(M_TRIM_THRESHOLD, 2**30)  # and the heap's top kept, not trimmed after each batch


class TorchPredictor:
    """The converted model on its device: cached crops to input tensors, input tensors to logits.
    `fuse`: on CPU, the model with each convolution fused with its activation through oneDNN
    (cpu_fusion.py), made at the first batch's input size."""

    def __init__(self, model: torch.nn.Module, normalize: Normalizer, device: torch.device, fuse: bool = False):
        if device.type == "cuda":
            exact_cuda()
        else:
            reuse_freed_memory()
        # Channels-last: the cached crops are NHWC already, and oneDNN's convolutions are fastest there.
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.normalize, self.device = normalize, device
        self.to_input = TorchNormalizer(normalize, device)
        self.fuse = fuse and device.type == "cpu"
        self.fused: torch.nn.Module | None = None

    def inputs(self, batch: np.ndarray) -> torch.Tensor:
        """A batch of cached crops (NHWC) as MLPerf's exact float32 input, NCHW (channels-last)."""
        with torch.inference_mode():
            if batch.dtype == np.uint8:
                # uint8 crosses to the device, where MLPerf's exact float32 input is made.
                return self.to_input(torch.from_numpy(batch).to(self.device))
            return torch.from_numpy(self.normalize(batch)).to(self.device).permute(0, 3, 1, 2)

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            if self.fuse and self.fused is None:
                from .cpu_fusion import fuse_for_cpu

                self.fused = fuse_for_cpu(self.model, x.shape[-1])
            model = self.fused if self.fused is not None else self.model
            return model(x).float().cpu().numpy()


def torch_logits(model: torch.nn.Module, images: np.ndarray, normalize: Normalizer, device: torch.device,
                 batch_size: int, progress: bool = True, timing: dict | None = None, fuse: bool = False) -> np.ndarray:
    """Every image's logits; `timing`, if given, gets the loop's eval_s and eval_images_per_s."""
    return predictor_logits(TorchPredictor(model, normalize, device, fuse), images, batch_size, progress, timing)


def predictor_logits(predict: TorchPredictor, images: np.ndarray, batch_size: int, progress: bool = True,
                     timing: dict | None = None) -> np.ndarray:
    timer = LoopTimer()
    out = None  # one array for all logits, filled in place (no pile of small ones between batches)
    for start, stop in _batches(len(images), batch_size, f"torch {predict.device}", progress, timer):
        logits = predict(predict.inputs(read_batch(images, start, stop)))
        if out is None:
            out = np.empty((len(images), logits.shape[1]), np.float32)
        out[start:stop] = logits
    if timing is not None:
        timing.update(timer.result(len(images)))
    return out


def graph_logits(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, normalize: Normalizer,
                 batch_size: int, progress: bool = True, desc: str = "tensorflow",
                 timing: dict | None = None) -> np.ndarray:
    timer = LoopTimer()
    out = []
    for start, stop in _batches(len(images), batch_size, desc, progress, timer):
        out.append(np.asarray(run(normalize(read_batch(images, start, stop))), dtype=np.float32))
    if timing is not None:
        timing.update(timer.result(len(images)))
    return np.concatenate(out)


@dataclass
class Score:
    good: int
    total: int
    top5_good: int
    predictions: np.ndarray  # 0..999, -1 for background

    @property
    def top1(self) -> float:
        return 100.0 * self.good / self.total

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_good / self.total

    def mlperf_line(self) -> str:
        return f"accuracy={self.top1:.3f}%, good={self.good}, total={self.total}"


def class_offset(logits: np.ndarray) -> int:
    """1 for TF-slim/MLPerf outputs (1001, index 0 = background), 0 for plain 1000-class outputs."""
    offset = logits.shape[1] - NUM_CLASSES
    if offset not in (0, 1):
        raise ValueError(f"model outputs {logits.shape[1]} classes; expected 1000 or 1001")
    return offset


def score(logits: np.ndarray, labels) -> Score:
    """MLPerf's scoring: argmax over all outputs, minus the background offset (background = wrong)."""
    labels = np.asarray(labels)
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits for {len(labels)} labels")
    offset = class_offset(logits)
    predictions = logits.argmax(axis=1) - offset
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5] - offset
    return Score(int((predictions == labels).sum()), len(labels),
                 int((top5 == labels[:, None]).any(axis=1).sum()), predictions)
