"""LoadGen's overhead: the torch backend as LoadGen's Offline system under test against the plain
evaluation loop, in one fresh process (timed.py)."""

from __future__ import annotations

from pathlib import Path

from benchmark.bench.evaluation import model_config
from benchmark.bench.timed import run_timed


def bench_loadgen(arch: str, graph_path: Path, images_path: Path, batch_size: int, repeats: int,
                  workdir: Path) -> dict:
    """The torch backend through LoadGen's Offline scenario against the plain evaluation loop, in one
    fresh process (after bench_eval converted the weights)."""
    import torch

    job = {"kind": "loadgen", "arch": arch, "graph": str(graph_path), "images": str(images_path),
           "normalization": model_config(arch).normalization, "batch_size": batch_size,
           "threads": torch.get_num_threads(), "weights": str(workdir / "weights"), "repeats": repeats,
           "logs": str(workdir / f"loadgen-{arch}")}
    return {"arch": arch, **run_timed(job, "LoadGen's Offline run")}


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
