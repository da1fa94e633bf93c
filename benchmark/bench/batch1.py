"""Batch 1 against OpenVINO and ONNX Runtime, settled by rounds: the machine's speed drifts (2x for
minutes at a time on 2 shared cores), so a best-of-3 gap at batch 1 can be drift. Here each round
times the harness's default torch backend and the peers back to back, each in a fresh process, their
order rotated from round to round; a drift moves a round's passes alike, so each round gives a
ratio, and the ratios' median, range and sign test tell a real gap from drift."""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmark.bench.evaluation import installed, model_config, onnx_baseline
from benchmark.bench.timed import run_timed

PEERS = ("openvino", "onnxruntime")  # timed.py's rows: the graph by tf2onnx, as MLPerf publishes it


PASSES = 3  # per process, the best kept: a pass is about a second, and a stall of the machine's inside one
# had swung single-pass rounds from 0.64x to 1.80x on a shared 2-core machine


def timed_batch1(arch: str, graph: Path, images: Path, kind: str, onnx: Path | None, limit: int,
                 workdir: Path) -> float:
    """Images/s of the best of PASSES batch-1 passes of `kind` over the first `limit` cached crops, in a
    fresh process."""
    import torch

    model = model_config(arch)
    job = {"arch": arch, "graph": str(graph), "images": str(images), "normalization": model.normalization,
           "input_tensor": model.input_tensor, "logits_tensor": model.logits_tensor, "backend": kind,
           "device": "cpu", "threads": torch.get_num_threads(), "weights": str(workdir / "weights"),
           "onnx": str(onnx) if onnx else None}
    out = str(workdir / f"batch1-{kind}.npy")
    return max(run_timed({**job, "passes": [{"batch_size": 1, "limit": limit, "out": out}] * PASSES},
                         f"{kind} at batch 1")["images_per_s"])


def bench_batch1(arch: str, graph: Path, images: Path, rounds: int, limit: int, workdir: Path) -> dict:
    """`rounds` rounds of torch and each installed peer at batch 1; per peer, torch's ratio in each round."""
    from benchmark.evaluation.significance import mcnemar_exact

    onnx = onnx_baseline(arch, graph, workdir)
    peers = [p for p in PEERS if onnx and installed(p)]
    kinds = ["torch", *peers]
    per_round = []
    for r in range(rounds):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
        per_round.append({k: timed_batch1(arch, graph, images, k, onnx, limit, workdir) for k in order})
    summary = {}
    for peer in peers:
        ratios = [p["torch"] / p[peer] for p in per_round]
        faster = sum(x > 1 for x in ratios)
        summary[peer] = {"torch_ips": statistics.median(p["torch"] for p in per_round),
                         "peer_ips": statistics.median(p[peer] for p in per_round),
                         "median": statistics.median(ratios), "low": min(ratios), "high": max(ratios),
                         "faster": faster, "rounds": len(ratios),
                         "sign_p": mcnemar_exact(faster, len(ratios) - faster)}
    return {"arch": arch, "rounds": per_round, "peers": summary, "limit": limit,
            "missing": [p for p in PEERS if p not in peers]}


LABELS = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}


def render(records: list[dict], rounds: int) -> list[str]:
    if not records:
        return []
    limit = records[0]["limit"]
    lines = [f"## Batch 1, settled: torch against OpenVINO and ONNX Runtime ({rounds} rounds, each timing every "
             f"backend in a fresh process, the best of {PASSES} passes over the first {limit} cached images, the "
             f"order rotated each round)",
             "", "| model | peer | torch images/s (median) | peer images/s (median) | torch / peer: median | "
             "lowest, highest round | rounds torch was faster | sign test p |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        for peer, s in r["peers"].items():
            lines.append(f"| {r['name']} | {LABELS[peer]} | {s['torch_ips']:.1f} | {s['peer_ips']:.1f} | "
                         f"{s['median']:.2f}x | {s['low']:.2f}x, {s['high']:.2f}x | {s['faster']} of {s['rounds']} | "
                         f"{s['sign_p']:.3g} |")
        lines += [f"Not measured: {LABELS[p]} (not installed, or no ONNX of the graph)." for p in r["missing"]]
    lines += ["", "A round's ratio compares passes timed within seconds of each other; the sign test asks "
              "whether torch wins more rounds than a coin would (p < 0.05: the gap is real, not drift).", ""]
    return lines
