"""The machine a report was measured on: CPU, versions, how many cores are free, a GEMM's rate."""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def machine() -> list[str]:
    import cv2
    import torch

    from benchmark.evaluation.report import tensorflow_version

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return [f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"machine: {cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}",
            f"versions: python {platform.python_version()}, torch {torch.__version__}, "
            f"tensorflow {tensorflow_version()}, opencv {cv2.__version__}, "
            f"numpy {np.__version__}"]


def _spin(n: int = 4_000_000) -> float:
    start = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - start


def effective_cores() -> float:
    """How many cores are free right now: a CPU-bound loop in one process, then in one process per
    visible core at once; the ratio of the work done per second (not os.cpu_count(), which counts
    cores other jobs may be using)."""
    import multiprocessing

    n = os.cpu_count() or 1
    alone = min(_spin() for _ in range(2))
    with multiprocessing.get_context("fork").Pool(n) as pool:
        start = time.perf_counter()
        pool.map(_spin, [4_000_000] * n, chunksize=1)
        together = time.perf_counter() - start
    return n * alone / together


GEMM_SIZE = 2048  # on 2 cores as fast as 4096 (180 GFLOP/s both), in a tenth of the time


def matmul_gflops(n: int = GEMM_SIZE, repeats: int = 5) -> float:
    """float32 GEMM throughput with the same threads: the ceiling for a convolution-bound model."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):  # the best product: the machine's rate, not its neighbours'
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9
