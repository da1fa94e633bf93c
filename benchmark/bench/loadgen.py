"""LoadGen's overhead: the torch backend as LoadGen's Offline system under test against the plain
evaluation loop, in one fresh process (timed.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmark.bench.evaluation import model_config


def bench_loadgen(arch: str, graph_path: Path, images_path: Path, batch_size: int, repeats: int,
                  workdir: Path) -> dict:
    """The torch backend through LoadGen's Offline scenario against the plain evaluation loop, in one
    fresh process (after bench_eval converted the weights)."""
    import subprocess

    import torch

    job = {"kind": "loadgen", "arch": arch, "graph": str(graph_path), "images": str(images_path),
           "normalization": model_config(arch).normalization, "batch_size": batch_size,
           "threads": torch.get_num_threads(), "weights": str(workdir / "weights"), "repeats": repeats,
           "logs": str(workdir / f"loadgen-{arch}")}
    proc = subprocess.run([sys.executable, "-m", "benchmark.bench.timed", json.dumps(job)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"timing LoadGen's Offline run failed:\n{proc.stderr[-3000:]}")
    return {"arch": arch, **json.loads(proc.stdout.strip().splitlines()[-1])}


def render(loadgen: list[dict], images: int, batch_size: int, repeats: int) -> list[str]:
    lines: list[str] = []
    if loadgen:
        lines += [f"## LoadGen's overhead (Offline, performance mode, {images} cached images, batch size "
                  f"{batch_size}, one process, the two interleaved, best of {repeats})", "",
                  "| model | through LoadGen (samples/s) | evaluation loop (images/s) | ratio |",
                  "|---|---|---|---|"]
        for g in loadgen:
            lines.append(f"| {g['name']} | {g['loadgen_ips']:.1f} | {g['direct_ips']:.1f} | "
                         f"{g['loadgen_ips'] / g['direct_ips']:.3f}x |")
        lines += ["", "LoadGen's samples/s is its own figure (samples over the query's time); its sample "
                  "library holds the inputs normalised in memory, while the loop reads and normalises "
                  "each batch from the cache.", ""]
    return lines
