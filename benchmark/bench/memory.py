"""Memory: peak resident memory of evaluation streaming a synthetic cache (memory_probe.py), the
harness's loop against plain memory-map slicing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

MEMORY_BATCH = 64  # the figure; the default CPU batch (16) holds less


def bench_memory(n: int, batch_size: int, workdir: Path) -> dict:
    """Peak resident memory of evaluation streaming a synthetic n-image cache (a sparse file), with
    a model that costs nothing, so the data path alone is measured; each run in a fresh process."""
    path = workdir / "synthetic.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 224, 224, 3)).flush()
    peaks = {}
    for mode in ("harness", "plain"):
        out = subprocess.run([sys.executable, "-m", "benchmark.bench.memory_probe", str(path), mode, str(batch_size)],
                             capture_output=True, text=True, check=True)
        peaks[mode] = int(out.stdout.split()[-1])
    path.unlink()
    return {"n": n, "cache_bytes": n * 224 * 224 * 3, **peaks}


def render(m: dict) -> list[str]:
    return ["## Memory: evaluation streaming the cache", "",
            "| measure | harness | memory-map slicing | ratio |", "|---|---|---|---|",
            f"| peak resident memory, {m['n']} images ({m['cache_bytes'] / 1e9:.1f} GB cache), batch "
            f"{MEMORY_BATCH} | {m['harness'] / 1e9:.2f} GB | {m['plain'] / 1e9:.2f} GB | "
            f"{m['plain'] / m['harness']:.1f}x less |", ""]
