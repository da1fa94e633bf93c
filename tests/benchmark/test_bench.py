"""The benchmark command runs and reports ratios against its baselines (timings are never asserted)."""

import contextlib
import importlib
import io
import json

import pytest

from tests.helpers import SAMPLES, SLIM_2017, TENSORS, need


def in_process_timing(monkeypatch) -> list[str]:
    """The bench's timing jobs (timed.py) run in this process, their job and JSON line passed as to and
    from a fresh one: the first in its own process, as the bench runs each, the rest here (no timing is
    asserted, and a process per job costs the suite a torch import and a runtime's each). The jobs'
    names, in order."""
    from benchmark.bench import batch1, evaluation, loadgen, precision, timed

    real, jobs = timed.run_timed, []

    def run_timed(job: dict, what: str) -> dict:
        jobs.append(what)
        if len(jobs) == 1:
            return real(job, what)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert timed.main([json.dumps(job)]) == 0
        return json.loads(out.getvalue().strip().splitlines()[-1])

    for module in (batch1, evaluation, loadgen, precision):
        monkeypatch.setattr(module, "run_timed", run_timed)
    return jobs


@pytest.mark.slow  # timing jobs (two with TensorFlow), a tf2onnx conversion, quantizers and a LoadGen run
def test_bench_reports_ratios_and_exactness(tmp_path, capsys, monkeypatch):
    need(SAMPLES)
    graph = need(SLIM_2017 / "mobilenet_v1_0.25_224" / "frozen_graph.pb")  # the bench crops at 224
    bench = importlib.import_module("benchmark.bench.__main__")
    from benchmark.bench import startup

    jobs = in_process_timing(monkeypatch)

    # one command's start-up timed here (each command's imports: test_startup_commands_import_what_exists)
    cheap = "python -m preprocessing (OpenCV or Pillow pipeline)"
    monkeypatch.setattr(startup, "STARTUP", {cheap: startup.STARTUP[cheap]})
    out = tmp_path / "bench.md"
    assert bench.main(["--dataset", str(SAMPLES), "--images", "24", "--mobilenet", str(graph), "--repeats", "1",
                       "--loadgen", "--batch1-images", "8", "--startup-repeats", "1", "--end-to-end-images", "30",
                       "--precision", "--calibration-images", "8", "--sweep", "--batch1-rounds", "1",
                       "--out", str(out)]) == 0
    report = out.read_text()
    assert jobs[0] == "torch on cpu" and "LoadGen's Offline run" in jobs and "tf on cpu" in jobs
    assert "| normalised inputs bit-identical | yes |" in report
    assert "4.00x smaller" in report  # uint8 against float32
    assert "The floor: reading and decoding every image alone in the build's" in report
    assert "A sweep's caches (4 pipelines, the sample sweep's: " in report and "3 decodes per image, not 4" in report
    assert "- effective parallel cores (a CPU-bound probe" in report and "| images/s, one thread each |" in report
    assert "(as MLPerf runs it: " in report and "| MLPerf's loop | np.save one .npy | " in report
    assert "| python -m preprocessing (OpenCV or Pillow pipeline) | " in report  # start-up per command
    assert "End to end, each a command in a fresh process (start-up included), 30 images (the 24 listed" in report
    assert "| 24/24 |" in report  # torch and TF agree on every image
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| mobilenet_v1 (")]
    by = {(r[1], r[3]): r for r in rows}  # (backend, batch)
    for backend in ("torch (fold_bn=true, cpu_fusion=graph: default)", "torch (cpu_fusion=true)",
                    "torch (cpu_fusion=false)", "TensorFlow",
                    "ONNX Runtime (tf2onnx of the graph, batch free)", "OpenVINO (tf2onnx of the graph, batch free)"):
        assert by[(backend, "1")][10] == "8/8" and by[(backend, "16")][10] == "24/24"  # agreement with TF
    exported = "ONNX Runtime (the converted model by torch.onnx: backend=onnxruntime)"  # its batch is free
    assert by[(exported, "16")][10] == "24/24" and by[(exported, "1")][10] == "8/8"
    torch_row = by[("torch (fold_bn=true, cpu_fusion=graph: default)", "1")]
    openvino = float(by[("OpenVINO (tf2onnx of the graph, batch free)", "1")][4])
    assert abs(float(torch_row[7].rstrip("x")) - float(torch_row[4]) / openvino) < 0.02  # the ratio to OpenVINO
    ort_ips = max(float(by[(b, "1")][4]) for b in ("ONNX Runtime (tf2onnx of the graph, batch free)", exported))
    # the 2017 graph fixes its batch at 1; the tf2onnx model's is freed: it ran at 16, not image by image
    assert abs(float(torch_row[6].rstrip("x")) - float(torch_row[4]) / ort_ips) < 0.02  # against ORT's faster row
    (row,) = [line for line in report.splitlines()
              if line.startswith("| mobilenet_v1 (") and line.endswith("x |") and line.count(" | ") == 3]  # LoadGen's
    through, direct, ratio = (float(cell.rstrip("x")) for cell in row.strip("| ").split(" | ")[1:])
    assert through > 0 and direct > 0 and abs(ratio - through / direct) < 0.01
    assert report.strip() in capsys.readouterr().out
    # --batch1-rounds: torch against each peer, round by round (the rounds' order and statistics:
    # test_batch1_rounds_rotate_and_settle_each_peer)
    settled = report.split("## Batch 1, settled")[1].split("\n## ")[0]
    rows = [line.split(" | ") for line in settled.splitlines() if line.startswith("| mobilenet_v1 (")]
    assert [r[1] for r in rows] == ["OpenVINO", "ONNX Runtime"]  # both are test dependencies
    for r in rows:
        low, high = (float(x.rstrip("x")) for x in r[5].split(", "))
        assert low <= float(r[4].rstrip("x")) <= high and r[6].endswith(" of 1") and 0 < float(r[7].rstrip(" |")) <= 1
    # --precision: every row against exact fp32 (the first), its flips consistent with its top-1
    section = report.split("## Precision")[1].split("\n## ")[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| mobilenet_v1 (")]
    labels = [r[1] for r in rows]
    import torch

    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert labels[:3] == ["torch (fold_bn=true, cpu_fusion=graph: default)", "torch bf16 (precision=bf16)",
                              "torch int8 (precision=int8: FX)"]
    else:  # precision=bf16 refuses such a CPU: the row is not measured, and says why
        assert labels[:2] == ["torch (fold_bn=true, cpu_fusion=graph: default)", "torch int8 (precision=int8: FX)"]
        assert "Not measured: the harness's bf16: this CPU has no bfloat16 instructions" in report
    assert "ONNX Runtime int8 (static, QDQ, per-channel weights)" in labels  # onnxruntime is a test dependency
    assert "OpenVINO int8 (NNCF post-training quantization)" in labels or "Not measured: OpenVINO's int8" in report
    exact_good = int(rows[0][2].split("(")[1].split("/")[0])
    assert rows[0][3:8] == ["0", "0", "1", "24/24", "0"] and rows[0][9] == "1.00x"
    for r in rows:
        good, n = map(int, r[2].split("(")[1].rstrip(")").split("/"))
        assert n == 24 and good - exact_good == int(r[3]) - int(r[4])
        assert int(r[6].split("/")[0]) <= 24 - int(r[3]) - int(r[4])  # a flip changes the top class
        # the ratio is of the unrounded rates, printed to 0.01, the rates to 0.1: their rounding bounds it
        fast, exact = float(r[8]), float(rows[0][8])
        assert abs(float(r[9].rstrip("x")) - fast / exact) <= 0.005 + fast / exact * (0.05 / fast + 0.05 / exact)
    table = [i for i, line in enumerate(section.splitlines()) if line.startswith("|")]
    assert table == list(range(table[0], table[0] + len(table)))  # one table, no line between its rows


def test_each_evaluation_row_runs_what_its_label_names(fixture_graphs, tmp_path):
    """The evaluation's two ONNX Runtime rows time two models: tf2onnx's conversion of the graph
    (`onnxruntime`) and the harness's converted model exported by torch.onnx, as backend=onnxruntime
    runs it (`onnxruntime-export`). The fault this holds off: both had run tf2onnx's model, so the
    export's row and "vs ONNX Runtime (its faster row)" read one model timed twice."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from benchmark.bench.timed import make_runtime
    from benchmark.convert import load_converted
    from benchmark.formats.checkpoint import open_checkpoint
    from benchmark.testing.tf2onnx import mlperf_onnx

    graph = fixture_graphs(0.25, 128, read_identities=False)
    weights = tmp_path / "weights"
    load_converted("mobilenet_v1", open_checkpoint(graph), None, weights)  # as the bench does, before timing
    onnx = mlperf_onnx(graph, "mobilenet_v1", tmp_path / "tf2onnx.onnx")

    def runtime(backend: str):
        return make_runtime("mobilenet_v1", str(graph), "mobilenet", *TENSORS["mobilenet_v1"], backend, "cpu", 1,
                            str(weights), str(onnx))

    assert runtime("onnxruntime").model.producer_name == "tf2onnx"
    assert runtime("onnxruntime-export").model.producer_name == "pytorch"
    # and the torch rows as their labels say: cpu_fusion, and batch norms folded but for fold_bn=false's
    # (which keeps the graph's op-by-op arithmetic, so nothing is fused)
    for backend, fusion, folded in (("torch", "graph", True), ("torch-ops", True, True),
                                    ("torch-eager", False, True), ("torch-graph-order", False, False)):
        torch_runtime = runtime(backend)
        norms = [m for m in torch_runtime.model.modules() if type(m).__name__ == "TFBatchNorm2d"]
        assert (torch_runtime.cpu_fusion, not norms) == (fusion, folded), backend


def test_graph_flops_count_each_conv_at_its_own_kernel():
    """Conv2dSame computes TF's odd SAME padding with a zero-led larger kernel; the reported FLOPs are
    the graph's: 2 per multiply-add of the 3x3 kernels, plus the linear layer."""
    import torch

    from benchmark.bench.evaluation import graph_flops
    from benchmark.nn.layers import Conv2dSame

    model = torch.nn.Sequential(Conv2dSame(3, 8, 3, 2, bias=False),  # 224 -> 112, padding (0, 1)
                                Conv2dSame(8, 8, 3, 1, groups=8, bias=False),  # symmetric
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))
    expected = 2 * (112 * 112 * 8 * 3 * 9 + 112 * 112 * 8 * 9 + 8 * 10)
    assert graph_flops(model, torch.zeros(1, 3, 224, 224)) == expected


def test_cuda_bench_compares_two_devices_only(fixture_graphs):
    """The CUDA report's CPU-vs-CUDA logit difference is of two passes on two devices: each pass
    records where the model's weights and outputs were, and one device twice is refused (the fault:
    both passes on one device would report a difference of 0)."""
    import numpy as np
    import pytest

    from benchmark.bench.cuda import check_two_devices, pass_on
    from benchmark.evaluation.normalize import Normalizer
    from benchmark.runtimes.pytorch import TorchRuntime
    from tests.helpers import crops, torch_model

    model = torch_model(fixture_graphs(0.25, 96, read_identities=False), "mobilenet_v1")
    out, ran = pass_on(TorchRuntime(model, Normalizer("mobilenet"), "cpu"), crops(3, 96), 2)
    assert ran == "cpu" and out.shape == (3, 1001) and np.isfinite(out).all()
    check_two_devices("cpu", "cuda:0")
    for cpu_ran, cuda_ran in (("cpu", "cpu"), ("cuda:0", "cuda:0"), ("cpu", "cpu+cuda:0")):
        with pytest.raises(RuntimeError, match="not a comparison of two devices"):
            check_two_devices(cpu_ran, cuda_ran)


def test_cuda_bench_runs_its_steps_on_the_cpu(tmp_path, capsys):
    """`python -m benchmark.bench.cuda --device cpu`: every variant, the pass over a larger memory-mapped
    cache and the profile run (the CUDA-only steps, and CUDA's own kernels, need a GPU)."""
    from benchmark.bench.cuda import VARIANTS, main
    from tests.helpers import validation_images, write_layout

    root = write_layout(tmp_path / "val", "val_map", validation_images(4))
    out = tmp_path / "cuda.md"
    assert main(["--dataset", str(root), "--model", "mobilenet_v1=random", "--device", "cpu", "--batch-size", "4",
                 "--timed-images", "8", "--full-images", "12", "--repeats", "1", "--profile-batches", "2",
                 "--out", str(out)]) == 0
    report = out.read_text()
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| mobilenet_v1 | random")]
    assert [r[2] for r in rows[:len(VARIANTS)]] == [v.name for v in VARIANTS]
    # on the CPU no variant changes the arithmetic but the layout: the default's logits bit for bit
    assert {r[6] for r in rows[:len(VARIANTS)] if "NCHW" not in r[2]} == {"bit for bit |"}
    full = rows[len(VARIANTS)]  # the one pass over --full-images
    assert full[2] == "12" and float(full[4].rstrip(" |")) > 0
    assert report.count("## Profile: mobilenet_v1") == 2 and "operators (CPU)" in report
    assert "## CUDA against the CPU" not in report  # no second device to compare with
    assert report.strip() in capsys.readouterr().out


def test_precision_section_is_one_table_for_several_models():
    """Two models, each with a row it could not measure: the notes come after the table, not between
    its rows (where Markdown would end it)."""
    from benchmark.bench.precision import render

    row = {"label": "torch", "good": 1, "n": 2, "fixed": 0, "broken": 0, "mcnemar_p": 1.0, "same_top1": 2,
           "max_abs_logit_diff": 0.0, "ips": 10.0, "ratio": 1.0, "ips_1": 5.0, "ratio_1": 1.0}
    recipe = {"engine": "onednn", "activation_bits": 8, "weight_bits": 7, "bias_correction": True,
              "backend_config": "onednn"}
    records = [{"name": name, "rows": [row, row], "missing": ["bf16: no bf16"], "recipe": recipe}
               for name in ("mobilenet_v1 (fixture)", "resnet50 (fixture)")]
    lines = render(records, 2, 16, 1, 1, "calibrated on every other crop")
    table = [i for i, line in enumerate(lines) if line.startswith("|")]
    assert len(table) == 2 + 4 and table == list(range(table[0], table[0] + 6))
    assert lines.count("Not measured: bf16: no bf16.") == 1


def test_batch1_rounds_rotate_and_settle_each_peer(monkeypatch, tmp_path):
    """Each round times every backend once, the order rotated from round to round; per peer, torch's
    ratio in each round, their median and range, the rounds torch won and the sign test on them."""
    from benchmark.bench import batch1
    from benchmark.evaluation.significance import mcnemar_exact

    rates = {"torch": [100, 90, 120, 80], "openvino": [80, 100, 100, 100], "onnxruntime": [50, 45, 60, 40]}
    timed = []

    def fake(arch, graph, images, kind, onnx, limit, workdir):
        timed.append(kind)
        return float(rates[kind][sum(k == kind for k in timed) - 1])

    monkeypatch.setattr(batch1, "onnx_baseline", lambda arch, graph, workdir: tmp_path / "m.onnx")
    monkeypatch.setattr(batch1, "installed", lambda module: True)
    monkeypatch.setattr(batch1, "timed_batch1", fake)
    r = batch1.bench_batch1("mobilenet_v1", tmp_path / "g.pb", tmp_path / "i.npy", 4, 8, tmp_path)
    assert timed == ["torch", "openvino", "onnxruntime", "openvino", "onnxruntime", "torch",
                     "onnxruntime", "torch", "openvino", "torch", "openvino", "onnxruntime"]
    ov, ort = r["peers"]["openvino"], r["peers"]["onnxruntime"]
    assert (ov["low"], ov["high"], ov["faster"], ov["rounds"]) == (0.8, 1.25, 2, 4)
    assert ov["median"] == pytest.approx(1.05)  # of 0.8, 0.9, 1.2, 1.25
    assert (ov["torch_ips"], ov["peer_ips"], ov["sign_p"]) == (95, 100, mcnemar_exact(2, 2))
    assert (ort["median"], ort["faster"], ort["sign_p"]) == (2.0, 4, mcnemar_exact(4, 0)) and r["missing"] == []
    lines = batch1.render([{**r, "name": "m"}], 4)
    assert "| m | OpenVINO | 95.0 | 100.0 | 1.05x | 0.80x, 1.25x | 2 of 4 | 1 |" in lines


def test_startup_commands_import_what_exists():
    """Each start-up row's code imports modules that exist (the report test times one of them)."""
    import ast
    import importlib.util

    from benchmark.bench.startup import STARTUP

    for name, code in STARTUP.items():
        tree = ast.parse(code)
        modules = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        modules += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert modules, name
        for module in modules:
            assert importlib.util.find_spec(module) is not None, (name, module)
