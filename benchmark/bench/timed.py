"""One timed evaluation pass, in a fresh process, as `python -m benchmark backend=...` runs it.

python -m benchmark.bench.timed '{"arch": ..., "graph": ..., "images": ..., "normalization": ...,
    "input_tensor": ..., "logits_tensor": ..., "backend": ..., "device": ..., "batch_size": ...,
    "threads": ..., "weights": ..., "out": ...}'

`backend` is torch (batch norms folded, convolutions fused on CPU: the default), torch-eager
(folded, cpu_fusion=false), torch-graph-order (fold_bn=false), tf,
onnxruntime (the graph converted to ONNX by tf2onnx beforehand, `onnx`) or onnxruntime-export (the
converted model exported by torch.onnx, as `backend=onnxruntime` runs it); `limit` times the first
images only. The
torch model comes from the weight cache `weights` (converted beforehand), so TensorFlow is never
imported into a torch measurement (importing it slows PyTorch's CPU kernels). Prints one JSON
line: images/s of the timed pass after one warm-up batch; the logits are saved to `out`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def timed_pass(arch: str, graph: str, images: str, normalization: str, input_tensor: str, logits_tensor: str,
               backend: str, device: str, batch_size: int, threads: int, weights: str, onnx: str | None = None,
               limit: int | None = None) -> tuple[float, np.ndarray]:
    import torch

    from ..checkpoint import open_checkpoint
    from ..evaluate import graph_logits
    from ..normalize import Normalizer

    torch.set_num_threads(threads)
    images = np.load(images, mmap_mode="r")
    normalize = Normalizer(normalization)
    ckpt = open_checkpoint(Path(graph))
    if limit:
        images = images[:limit]
    if backend in ("onnxruntime", "onnxruntime-export"):
        from ..onnx_graph import OnnxGraph
        from ..ort_backend import OrtModel

        if backend == "onnxruntime":  # the graph as MLPerf's ONNX (converted beforehand)
            graph_onnx = OnnxGraph.from_file(Path(onnx))
        else:  # the harness's converted model exported by torch.onnx, as backend=onnxruntime runs it
            from ..convert import load_converted
            from ..layers import fold_batch_norms
            from ..onnx_export import export_onnx

            converted, info = load_converted(arch, ckpt, None, Path(weights))
            if info["converted"]:
                raise RuntimeError(f"{weights}: no converted weights; convert before timing")
            graph_onnx = export_onnx(fold_batch_norms(converted), images.shape[1], graph)
        model = OrtModel(graph_onnx, threads)

        def run(x):
            return graph_logits(model, x, normalize, batch_size, False, "onnxruntime")
    elif backend == "tf":
        from ..graph import FrozenGraph
        from ..tf_backend import TFGraphModel

        model = TFGraphModel(FrozenGraph.from_checkpoint(ckpt), input_tensor, logits_tensor, images.shape[1],
                             threads)

        def run(x):
            return graph_logits(model, x, normalize, batch_size, False)
    else:  # torch (fused on CPU), torch-eager (folded, not fused), torch-graph-order
        from ..convert import load_converted
        from ..evaluate import TorchPredictor, predictor_logits
        from ..layers import fold_batch_norms

        model, info = load_converted(arch, ckpt, None, Path(weights))
        if info["converted"]:
            raise RuntimeError(f"{weights}: no converted weights; convert before timing")
        if backend != "torch-graph-order":
            fold_batch_norms(model)
        predict = TorchPredictor(model, normalize, torch.device(device), fuse=backend == "torch")

        def run(x):
            out = predictor_logits(predict, x, batch_size, False)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return out

    run(images[:batch_size])  # warm-up: first-call allocations, kernel selection
    start = time.perf_counter()
    logits = run(images)
    return len(images) / (time.perf_counter() - start), logits


def loadgen_overhead(arch: str, graph: str, images: str, normalization: str, batch_size: int, threads: int,
                     weights: str, repeats: int, logs: str) -> dict:
    """The torch backend's images/s through the evaluation loop (`python -m benchmark`) and its
    samples/s as LoadGen's Offline SUT (`python -m benchmark.loadgen`) on the same crops, the two
    interleaved `repeats` times in this process; the best of each."""
    import mlperf_loadgen as lgm
    import torch

    from ..checkpoint import open_checkpoint
    from ..convert import load_converted
    from ..evaluate import TorchPredictor, predictor_logits
    from ..layers import fold_batch_norms
    from ..loadgen.settings import read_detail_log
    from ..loadgen.sut import SampleLibrary, SystemUnderTest, TorchBackend
    from ..normalize import Normalizer

    torch.set_num_threads(threads)
    crops = np.load(images, mmap_mode="r")
    n, normalize = len(crops), Normalizer(normalization)
    model, _ = load_converted(arch, open_checkpoint(Path(graph)), None, Path(weights))
    fold_batch_norms(model)
    predict = TorchPredictor(model, normalize, torch.device("cpu"), fuse=True)  # as python -m benchmark runs
    backend = TorchBackend(predict)
    library = SampleLibrary(crops, np.arange(n), backend)

    def failed(error):
        raise SystemExit(f"the SUT failed: {error!r}")

    best = {"direct_ips": 0.0, "loadgen_ips": 0.0}
    predictor_logits(predict, crops[:batch_size], batch_size, False)  # warm-up
    for r in range(repeats):
        start = time.perf_counter()
        predictor_logits(predict, crops, batch_size, False)
        best["direct_ips"] = max(best["direct_ips"], n / (time.perf_counter() - start))

        sut = SystemUnderTest(lgm, library, backend, batch_size, 1, False, failed)
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
    out = job.pop("out")
    ips, logits = timed_pass(**job)
    np.save(out, logits)
    print(json.dumps({"images_per_s": ips}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
