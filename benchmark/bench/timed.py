"""One timed evaluation pass, in a fresh process, as `python -m benchmark backend=...` runs it.

python -m benchmark.bench.timed '{"arch": ..., "graph": ..., "images": ..., "normalization": ...,
    "input_tensor": ..., "logits_tensor": ..., "backend": ..., "device": ..., "threads": ..., "weights": ...,
    "passes": [{"batch_size": ..., "limit": ..., "out": ...}, ...]}'

`backend` is one of KINDS: torch (batch norms folded, compiled into oneDNN Graph partitions on CPU:
the default), torch-ops (each convolution fused with its activation: cpu_fusion=true), torch-eager
(folded, cpu_fusion=false), torch-graph-order (fold_bn=false), tf, onnxruntime or openvino (the
graph converted to ONNX by tf2onnx beforehand, `onnx`) or onnxruntime-export (the converted model exported
by torch.onnx, as `backend=onnxruntime` runs it). The model is made once, then each pass (a batch size;
`limit`: the first images only) is warmed up and timed in turn: a batch-1 pass after one at batch 16 in
the same process times as one in a fresh process (measured: torch 848 against 845 images/s, ONNX
Runtime 1,010 against 1,005, best of 3 each). Prints one JSON line: each pass's images/s; its logits
are saved to its `out`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

# The bench's rows: the runtime (runtimes.RUNTIMES) and its options. "onnxruntime" runs the graph
# converted to ONNX by tf2onnx beforehand (`onnx`), as MLPerf publishes it; so does "openvino".
KINDS = {
    "torch": ("torch", {}, "torch (fold_bn=true, cpu_fusion=graph: default)"),
    "torch-ops": ("torch", {"cpu_fusion": True}, "torch (cpu_fusion=true)"),
    "torch-eager": ("torch", {"cpu_fusion": False}, "torch (cpu_fusion=false)"),
    "torch-graph-order": ("torch", {"fold_bn": False}, "torch (fold_bn=false)"),
    "onnxruntime": ("onnxruntime", {}, "ONNX Runtime (tf2onnx of the graph, batch free)"),
    "onnxruntime-export": ("onnxruntime", {}, "ONNX Runtime (the converted model by torch.onnx: backend=onnxruntime)"),
    "openvino": ("openvino", {}, "OpenVINO (tf2onnx of the graph, batch free)"),
    "tf": ("tf", {}, "TensorFlow"),
}
# The rows that run an ONNX model made beforehand (`onnx`: tf2onnx's; ONNX Runtime's QDQ model; the
# graph NNCF's IR was made from); the others start from the frozen graph.
FROM_ONNX = ("onnxruntime", "openvino", "onnxruntime-int8", "openvino-int8")
# The precision section's rows (bench/precision.py): the harness's faster precisions and the peers'
# own int8 quantizers, each model made beforehand (`quantized`: the harness's TorchScript int8 model,
# ONNX Runtime's QDQ .onnx, or OpenVINO's IR .xml from NNCF).
PRECISION_KINDS = {
    "torch-bf16": ("torch", {"precision": "bf16"}, "torch bf16 (precision=bf16)"),
    "torch-int8": ("torch", {"precision": "int8"}, "torch int8 (precision=int8: FX)"),
    "onnxruntime-int8": ("onnxruntime", {}, "ONNX Runtime int8 (static, QDQ, per-channel weights)"),
    "openvino-int8": ("openvino", {}, "OpenVINO int8 (NNCF post-training quantization)"),
}


def make_runtime(arch: str, graph: str, normalization: str, input_tensor: str, logits_tensor: str, backend: str,
                 device: str, threads: int, weights: str, onnx: str | None = None, quantized: str | None = None):
    """The runtime of a bench row, as `python -m benchmark backend=...` makes it. PyTorch's model comes
    from the weight cache `weights` (converted beforehand), so TensorFlow is never imported into a
    torch measurement (importing it slows PyTorch's CPU kernels)."""
    import torch

    from benchmark import runtimes
    from benchmark.formats.checkpoint import open_checkpoint
    from benchmark.runtimes.source import ModelSource, ModelSpec

    torch.set_num_threads(threads)
    model = ModelSpec(arch, arch, normalization, input_tensor=input_tensor, logits_tensor=logits_tensor)
    name, options, _ = {**KINDS, **PRECISION_KINDS}[backend]
    if backend == "onnxruntime-int8":
        onnx = quantized  # ONNX Runtime's own quantized model, run as any .onnx checkpoint
    # By the row, not the runtime: onnxruntime-export is ONNX Runtime too, but starts from the frozen
    # graph, as backend=onnxruntime does, and exports the converted model by torch.onnx.
    source = ModelSource(open_checkpoint(Path(onnx if backend in FROM_ONNX else graph)), model, Path(weights))
    if backend == "openvino-int8":  # NNCF's IR, read as the tf2onnx graph it was made from is read
        from benchmark.runtimes.openvino import OpenVINOModel

        return OpenVINOModel(source.onnx_graph, quantized, threads, source.normalize, 224)
    runtime = runtimes.create(name, source, runtimes.Options(device=device, threads=threads, **options))
    if backend == "torch-int8":
        runtime.quantize(np.empty((0,)), 1, Path(quantized))  # loaded: made beforehand, never timed
    if (source.conversion or {}).get("converted"):
        raise RuntimeError(f"{weights}: no converted weights; convert before timing")
    return runtime


def timed_passes(arch: str, graph: str, images: str, normalization: str, input_tensor: str, logits_tensor: str,
                 backend: str, device: str, threads: int, weights: str, passes: list[dict], onnx: str | None = None,
                 quantized: str | None = None) -> list[float]:
    """Images/s of each pass in `passes` (batch_size, limit, out) with one runtime; logits saved to `out`."""
    from benchmark.evaluation.loop import logits

    crops = np.load(images, mmap_mode="r")
    runtime = make_runtime(arch, graph, normalization, input_tensor, logits_tensor, backend, device, threads,
                           weights, onnx, quantized)

    def run(x, batch_size):
        out = logits(runtime, x, batch_size, False)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        return out

    speeds = []
    for p in passes:
        x, batch_size = crops[:p.get("limit") or len(crops)], p["batch_size"]
        run(x[:batch_size], batch_size)  # warm-up: first-call allocations, kernel selection
        if len(x) % batch_size:  # and for the last, partial batch's shape (a dynamic-shape runtime compiles it)
            run(x[:len(x) % batch_size], batch_size)
        start = time.perf_counter()
        out = run(x, batch_size)
        speeds.append(len(x) / (time.perf_counter() - start))
        np.save(p["out"], out)
    return speeds


def run_timed(job: dict, what: str) -> dict:
    """This module's main on `job` in a fresh process (no other runtime's imports or threads touch it):
    its JSON line."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "benchmark.bench.timed", json.dumps(job)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"timing {what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loadgen_overhead(arch: str, graph: str, images: str, normalization: str, batch_size: int, threads: int,
                     weights: str, repeats: int, logs: str) -> dict:
    """The torch backend's images/s through the evaluation loop (`python -m benchmark`) and its
    samples/s as LoadGen's Offline SUT (`python -m benchmark.loadgen`) on the same crops, the two
    interleaved `repeats` times in this process; the best of each."""
    import mlperf_loadgen as lgm

    from benchmark.evaluation.loop import logits
    from benchmark.loadgen.settings import read_detail_log
    from benchmark.loadgen.sut import SampleLibrary, SystemUnderTest

    crops = np.load(images, mmap_mode="r")
    n = len(crops)
    runtime = make_runtime(arch, graph, normalization, "", "", "torch", "cpu", threads, weights)  # as python -m benchmark runs
    library = SampleLibrary(crops, np.arange(n), runtime)

    def failed(error):
        raise SystemExit(f"the SUT failed: {error!r}")

    best = {"direct_ips": 0.0, "loadgen_ips": 0.0}
    logits(runtime, crops[:batch_size], batch_size, False)  # warm-up
    for r in range(repeats):
        start = time.perf_counter()
        logits(runtime, crops, batch_size, False)
        best["direct_ips"] = max(best["direct_ips"], n / (time.perf_counter() - start))

        sut = SystemUnderTest(lgm, library, runtime, batch_size, 1, False, failed)
        settings = lgm.TestSettings()
        settings.FromConfig("", "mobilenet", "Offline", 0)
        settings.scenario, settings.mode = lgm.TestScenario.Offline, lgm.TestMode.PerformanceOnly
        # LoadGen's one Offline query holds expected_qps x min_duration x 1.1 samples: all n of them.
        settings.min_duration_ms, settings.offline_expected_qps = 1000, n / 1.1
        settings.min_query_count, settings.performance_sample_count_override = 1, n
        qsl = lgm.ConstructQSL(n, n, sut.load, sut.unload)
        handle = lgm.ConstructSUT(sut.issue, sut.flush)
        log = lgm.LogSettings()
        log.log_output.outdir = str(Path(logs) / str(r))
        Path(log.log_output.outdir).mkdir(parents=True, exist_ok=True)
        log.log_output.copy_summary_to_stdout = False
        lgm.StartTestWithLogSettings(handle, qsl, settings, log, "")
        sut.stop()
        lgm.DestroySUT(handle)
        lgm.DestroyQSL(qsl)
        values = read_detail_log(Path(log.log_output.outdir) / "mlperf_log_detail.txt")["values"]
        best["loadgen_ips"] = max(best["loadgen_ips"], float(values["result_samples_per_second"]))
        best["samples_per_query"] = values["effective_samples_per_query"]
    return best


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    if job.pop("kind", None) == "loadgen":
        print(json.dumps(loadgen_overhead(**job)))
        return 0
    print(json.dumps({"images_per_s": timed_passes(**job)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
