"""Evaluation speed: each backend (runtimes/, timed.py's rows) in a fresh process on the same cached
crops, at the CPU batch size and at batch 1, against TensorFlow, ONNX Runtime and OpenVINO, with each
row's top-1 agreement and largest logit difference against TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.bench.machine import GEMM_SIZE
from benchmark.bench.timed import KINDS, run_timed


def model_config(arch: str):
    from benchmark import conf
    from benchmark.families import family

    return conf.load("model", family(arch).config)


BACKENDS = {kind: label for kind, (_, _, label) in KINDS.items()}  # the rows, in the report's order


def graph_flops(model, x) -> int:
    """The graph's FLOPs for input `x`: FlopCounterMode's count with every convolution counted at its
    own kernel size (for TF's odd SAME padding, Conv2dSame adds a zero row or column of taps that
    the graph does not compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    convs = []

    def count(conv, inputs, out):  # 2 flops per multiply-add, as FlopCounterMode counts them
        convs.append(2 * out.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1])

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    counted = counter.get_flop_counts()["Global"]
    return counter.get_total_flops() - counted.get(torch.ops.aten.convolution, 0) + sum(convs)


def installed(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def onnx_baseline(arch: str, graph_path: Path, workdir: Path) -> Path | None:
    """The graph as MLPerf's ONNX (tf2onnx), or None where ONNX Runtime or tf2onnx is not installed."""
    if not installed("onnxruntime", "tf2onnx"):
        return None
    from benchmark.testing.tf2onnx import mlperf_onnx

    return mlperf_onnx(graph_path, arch, workdir / f"{arch}.onnx")


def bench_eval(arch: str, graph_path: Path, images_path: Path, batch_size: int, repeats: int,
               workdir: Path, batch1_images: int = 0) -> dict:
    """Each backend timed in a fresh process (as `python -m benchmark backend=...` runs), the
    processes interleaved `repeats` times, the best pass of each kept; agreement against TF. Rows at
    the batch size, and at batch 1 on the first `batch1_images` images (the same process's second pass)."""
    import torch

    from benchmark.convert import load_converted
    from benchmark.formats.checkpoint import open_checkpoint

    model = model_config(arch)
    weights = workdir / "weights"
    converted, _ = load_converted(arch, open_checkpoint(graph_path), None, weights)  # once, outside the timing
    flops = graph_flops(converted, torch.zeros(1, 3, *np.load(images_path, mmap_mode="r").shape[1:3]))
    onnx = onnx_baseline(arch, graph_path, workdir)  # converted once, outside the timing
    backends = [b for b in BACKENDS if (b != "onnxruntime" or onnx) and (b != "openvino" or (onnx and installed("openvino")))
                and (b != "onnxruntime-export" or installed("onnx", "onnxruntime"))]
    # each backend's process times its batch-size pass, then its batch-1 pass (timed.py)
    runs = [(b, "cpu", [batch_size] + ([1] if batch1_images and b != "torch-graph-order" else []))
            for b in backends]
    runs += [("torch", "cuda", [256])] if torch.cuda.is_available() else []
    best: dict = {}
    for _ in range(repeats):
        for backend, device, batches in runs:
            passes = [{"batch_size": b, "limit": batch1_images if b == 1 else None,
                       "out": str(workdir / f"{arch}-{backend}-{device}-{b}.npy")} for b in batches]
            job = {"arch": arch, "graph": str(graph_path), "images": str(images_path),
                   "normalization": model.normalization, "input_tensor": model.input_tensor,
                   "logits_tensor": model.logits_tensor, "backend": backend, "device": device,
                   "threads": torch.get_num_threads(), "weights": str(weights), "passes": passes,
                   "onnx": str(onnx) if onnx else None}
            speeds = run_timed(job, f"{backend} on {device}")["images_per_s"]
            for p, ips in zip(passes, speeds):
                key = (backend, device, p["batch_size"])
                best[key] = {**job, **p, "images_per_s": max(ips, best.get(key, {}).get("images_per_s", 0.0))}
    tf = np.load(best[("tf", "cpu", batch_size)]["out"])
    for (backend, device, batch), r in best.items():
        logits = np.load(r["out"])  # against TF at the batch size (its first images for batch-1 rows)
        r["n"] = len(logits)
        r["agreement"] = int((logits.argmax(1) == tf[:len(logits)].argmax(1)).sum())
        r["max_abs_logit_diff"] = float(np.abs(logits - tf[:len(logits)]).max())
        # ONNX Runtime: the faster of its rows at this batch (MLPerf's tf2onnx model, the torch.onnx export)
        ort = max((best[(p, "cpu", batch)] for p in ("onnxruntime", "onnxruntime-export") if (p, "cpu", batch) in best),
                  key=lambda q: q["images_per_s"], default=None)
        peers = {"tf": best.get(("tf", "cpu", batch)), "onnxruntime": ort,
                 "openvino": best.get(("openvino", "cpu", batch))}
        r["vs"] = {p: r["images_per_s"] / q["images_per_s"] if q and device == "cpu" else None
                   for p, q in peers.items()}
    return {"arch": arch, "graph": str(graph_path), "n": len(tf), "logit_range": float(np.ptp(tf)),
            "flops_per_image": flops, "onnx": str(onnx) if onnx else None,
            "rows": list(best.values()), "tf_ips": best[("tf", "cpu", batch_size)]["images_per_s"]}


def fixture_graph(arch: str, dataset, workdir: Path) -> Path:
    """A frozen graph with the structure and names of MLPerf's graph for `arch` (MobileNet-v1 1.0/224
    or ResNet-50 v1.5) and random weights, batch-norm statistics from 8 of the images: timing needs
    the structure, not trained weights."""
    from benchmark.evaluation.normalize import Normalizer
    from benchmark.families import family
    from preprocessing.pipelines import crop, make_settings

    model = model_config(arch)
    settings = make_settings("mlperf", 224, model.mlperf_interpolation)
    calib = Normalizer(model.normalization)(np.stack([crop(dataset.path(i), settings) for i in range(8)]))
    path = workdir / f"{arch}_fixture.pb"
    path.write_bytes(family(arch).load("fixture_graph")(calib))
    return path


def source_name(given: str, graph: Path) -> str:
    return "MLPerf's structure, random weights" if given == "fixture" else f"{graph.parent.name}/{graph.name}"


def render(evals: list[dict], images: int, batch_size: int, batch1_images: int, repeats: int,
           gemm_gflops: float) -> list[str]:
    """The evaluation section from bench_eval's records (each with its `name`) and the machine's GEMM rate."""
    lines: list[str] = []
    if evals:
        lines += [f"## Evaluation ({images} cached images at batch size {batch_size} on CPU, the "
                  f"first {batch1_images} at batch 1; each backend in its own process, "
                  f"best of {repeats})", "",
                  "| model | backend | device | batch | images/s | vs TensorFlow | vs ONNX Runtime (its faster row) | "
                  "vs OpenVINO | GFLOP/s | 50,000 images | top-1 agreement with TF | max abs logit diff (of range) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in evals:
            name = e["name"]
            for r in sorted(e["rows"], key=lambda r: (-r["batch_size"], r["device"] != "cpu")):
                ips = r["images_per_s"]
                ratios = [f"{v:.2f}x" if v is not None else "-"
                          for v in (r["vs"]["tf"], r["vs"]["onnxruntime"], r["vs"]["openvino"])]
                lines.append(
                    f"| {name} | {BACKENDS[r['backend']]} | {r['device']} | {r['batch_size']} | {ips:.1f} | "
                    f"{' | '.join(ratios)} | {ips * e['flops_per_image'] / 1e9:.0f} | {50000 / ips / 60:.1f} min | "
                    f"{r['agreement']}/{r['n']} | "
                    f"{r['max_abs_logit_diff']:.2g} ({r['max_abs_logit_diff'] / e['logit_range']:.1g}) |")
        if not all(e["onnx"] for e in evals):
            lines += ["", "No ONNX Runtime rows: they need onnxruntime and tf2onnx (python -m pip install -e "
                      "\".[bench]\")."]
        if not installed("openvino"):
            lines += ["", "No OpenVINO rows: it is not installed (python -m pip install -e \".[bench]\")."]
        lines += ["", f"For scale: a {GEMM_SIZE} x {GEMM_SIZE} float32 matrix product runs at "
                  f"{gemm_gflops:.0f} GFLOP/s with the same threads.", ""]
    return lines
