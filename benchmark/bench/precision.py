"""Faster precisions against exact fp32, the harness's and the peers' own: the harness's bf16 and int8
(precision=), ONNX Runtime's static int8 quantization (QDQ, per-channel weights) and OpenVINO's with
NNCF, each int8 model calibrated on the same crops, then run on the same cached crops as exact fp32.
Per row: top-1, the images fixed and broken against exact fp32 with McNemar's p, the largest logit
difference, and images/s at the CPU batch size and at batch 1, each row in a fresh process
(timed.py: its batch-size pass, then its batch-1 pass), interleaved and the best kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.bench.evaluation import installed, model_config, onnx_baseline
from benchmark.bench.timed import KINDS, PRECISION_KINDS, run_timed


def calibration_batches(crops: np.ndarray, normalization: str, nchw: bool, batch: int = 1):
    """The calibration crops, normalised as the model takes them (float32, NCHW where its input is,
    as tf2onnx's MLPerf form is), a batch at a time."""
    from benchmark.evaluation.normalize import Normalizer

    normalize = Normalizer(normalization)
    for i in range(0, len(crops), batch):
        x = normalize(np.asarray(crops[i:i + batch]))
        yield np.ascontiguousarray(x.transpose(0, 3, 1, 2) if nchw else x)


def quantize_torch(arch: str, graph: Path, calibration: np.ndarray, weights: Path, out: Path) -> Path:
    """The harness's int8 model (precision=int8's recipe), calibrated on `calibration`."""
    from benchmark.bench.timed import make_runtime

    model = model_config(arch)
    import torch

    runtime = make_runtime(arch, str(graph), model.normalization, model.input_tensor, model.logits_tensor, "torch",
                           "cpu", torch.get_num_threads(), str(weights))
    runtime.quantize(calibration, 16, out)
    return out


def quantize_onnxruntime(onnx: Path, calibration: np.ndarray, normalization: str, out: Path) -> Path:
    """ONNX Runtime's static quantization at its recommended CPU settings: the model pre-processed
    (shape inference, graph optimisation), QDQ format, per-channel int8 weights, uint8 activations
    (U8S8, what its x86 kernels run fastest), MinMax calibration on the same crops; on a CPU without
    VNNI, 7-bit weights (`reduce_range`), as its documentation advises against U8S8's saturation there."""
    from benchmark.nn.quantize import has_vnni

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    first = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).get_inputs()[0]
    name, nchw = first.name, first.shape[1] == 3

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = calibration_batches(calibration, normalization, nchw)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {name: batch}

    import onnx as onnx_lib
    from onnx import version_converter

    # per-channel QDQ needs opset 13 (DequantizeLinear's axis); tf2onnx's MLPerf form is opset 11
    upgraded = out.with_suffix(".opset13.onnx")
    onnx_lib.save(version_converter.convert_version(onnx_lib.load(str(onnx)), 13), str(upgraded))
    prepared = out.with_suffix(".prepared.onnx")
    quant_pre_process(str(upgraded), str(prepared))
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=not has_vnni())
    return out


def quantize_openvino(onnx: Path, calibration: np.ndarray, normalization: str, out: Path) -> Path:
    """OpenVINO's model quantized by NNCF's post-training quantization (its default, mixed preset:
    symmetric int8 weights, activations as their ranges need) on the same crops, saved as IR."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx))
    nchw = model.inputs[0].get_partial_shape()[1].get_length() == 3 if model.inputs[0].get_partial_shape()[1].is_static \
        else False
    items = list(calibration_batches(calibration, normalization, nchw))
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))
    ov.save_model(quantized, str(out))
    return out


def bench_precision(arch: str, graph: Path, images_path: Path, labels: np.ndarray, calibration: np.ndarray,
                    batch_size: int, repeats: int, workdir: Path, batch1_images: int) -> dict:
    """Every row quantized (or converted) once, then each timed in a fresh process at the batch size and
    at batch 1 (its first `batch1_images` images), the passes interleaved `repeats` times."""
    import torch

    from benchmark.evaluation.significance import mcnemar_exact

    model = model_config(arch)
    weights = workdir / "weights"  # bench_eval converted the weights here
    onnx = onnx_baseline(arch, graph, workdir)
    made, missing = {"torch": None}, []
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        made["torch-bf16"] = None
    else:  # precision=bf16 refuses it (runtimes/pytorch.py): oneDNN would emulate bf16 in float32
        missing.append("the harness's bf16: this CPU has no bfloat16 instructions (AVX512-BF16, AMX or AVX512 "
                       "with VNNI) for oneDNN")
    made["torch-int8"] = str(quantize_torch(arch, graph, calibration, weights, workdir / "int8.pt"))
    if onnx and installed("onnxruntime"):
        made["onnxruntime-int8"] = str(quantize_onnxruntime(onnx, calibration, model.normalization,
                                                            workdir / "int8.onnx"))
    else:
        missing.append("ONNX Runtime's int8 needs onnxruntime and tf2onnx")
    if onnx and installed("openvino", "nncf"):
        made["openvino-int8"] = str(quantize_openvino(onnx, calibration, model.normalization, workdir / "int8.xml"))
    else:
        missing.append("OpenVINO's int8 needs openvino, nncf and tf2onnx")
    best: dict = {}
    for _ in range(repeats):
        for kind in made:  # one process per row: its batch-size pass, then its batch-1 pass (timed.py)
            passes = [{"batch_size": b, "limit": batch1_images if b == 1 else None,
                       "out": str(workdir / f"precision-{kind}-{b}.npy")} for b in (batch_size, 1)]
            job = {"arch": arch, "graph": str(graph), "images": str(images_path), "normalization": model.normalization,
                   "input_tensor": model.input_tensor, "logits_tensor": model.logits_tensor, "backend": kind,
                   "device": "cpu", "threads": torch.get_num_threads(), "weights": str(weights), "passes": passes,
                   "onnx": str(onnx) if onnx else None, "quantized": made[kind]}
            for p, ips in zip(passes, run_timed(job, kind)["images_per_s"]):
                best[(kind, p["batch_size"])] = max(ips, best.get((kind, p["batch_size"]), 0.0))
    exact = np.load(workdir / f"precision-torch-{batch_size}.npy")
    truth = np.asarray(labels)[:len(exact)]
    offset = exact.shape[1] - 1000
    right = exact.argmax(1) - offset == truth
    rows = []
    for kind in made:
        logits = np.load(workdir / f"precision-{kind}-{batch_size}.npy")
        ok = logits.argmax(1) - offset == truth
        fixed, broken = int((ok & ~right).sum()), int((right & ~ok).sum())
        rows.append({"kind": kind, "label": {**KINDS, **PRECISION_KINDS}[kind][2], "good": int(ok.sum()),
                     "same_top1": int((logits.argmax(1) == exact.argmax(1)).sum()),
                     "n": len(ok), "fixed": fixed, "broken": broken, "mcnemar_p": mcnemar_exact(fixed, broken),
                     "max_abs_logit_diff": float(np.abs(logits.astype(np.float64) - exact).max()),
                     "ips": best[(kind, batch_size)], "ips_1": best[(kind, 1)],
                     "ratio": best[(kind, batch_size)] / best[("torch", batch_size)],
                     "ratio_1": best[(kind, 1)] / best[("torch", 1)]})
    from benchmark.nn.quantize import recipe

    return {"arch": arch, "rows": rows, "missing": missing, "calibration": len(calibration),
            "recipe": recipe().to_dict()}


def render(records: list[dict], images: int, batch_size: int, batch1_images: int, repeats: int,
           calibration_note: str) -> list[str]:
    if not records:
        return []
    lines = [f"## Precision: faster precisions and the peers' int8 against exact fp32 ({images} cached images at "
             f"batch {batch_size}, the first {batch1_images} at batch 1; each row in its own process, best of "
             f"{repeats})", "", calibration_note, "",
             "| model | row | top-1 | fixed | broken | McNemar p | same top-1 as exact fp32 | max abs logit diff | "
             "images/s | vs exact fp32 | images/s, batch 1 | vs exact fp32, batch 1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        for row in r["rows"]:
            lines.append(f"| {r['name']} | {row['label']} | {100 * row['good'] / row['n']:.1f} % ({row['good']}/"
                         f"{row['n']}) | {row['fixed']} | {row['broken']} | {row['mcnemar_p']:.3g} | "
                         f"{row['same_top1']}/{row['n']} | {row['max_abs_logit_diff']:.3g} | {row['ips']:.1f} | "
                         f"{row['ratio']:.2f}x | {row['ips_1']:.1f} | {row['ratio_1']:.2f}x |")
    # after the table: a line between its rows would end it
    lines += ["", *sorted({f"Not measured: {m}." for r in records for m in r["missing"]})] \
        if any(r["missing"] for r in records) else []
    made = records[0]["recipe"]
    lines += ["", "fixed / broken: images the row gets right and exact fp32 (the first row) wrong, and the other way; "
              "p: exact McNemar test on those flips; same top-1: the images whose top class is exact fp32's, the "
              "measure that holds for a model of random weights (whose top-1 is near 0).", "",
              f"The harness's int8 on this CPU: PyTorch's {made['engine']} engine, {made['activation_bits']}-bit "
              f"activations, {made['weight_bits']}-bit weights (benchmark/nn/quantize.py: 8-bit where the CPU has "
              "VNNI, 7-bit where it has not and 8-bit pairs would saturate; depthwise convolutions 8-bit), "
              f"bias correction {'on' if made['bias_correction'] else 'off'}, PyTorch's {made['backend_config']} "
              "backend config (onednn: each ResNet-50 block's last convolution, residual add and ReLU one op).", ""]
    return lines
