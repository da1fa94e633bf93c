"""python -m benchmark.bench --dataset DIR [--images N] [--mobilenet PATH|fixture] [--resnet PATH|fixture] [--out FILE]

Measures the harness against baselines measured in the same run, and prints each figure, the
baseline's and the ratio (no timing is asserted anywhere):

- cache build: the harness (a thread per core, one memory-mapped uint8 array) against what MLPerf's
  reference does (one process, cv2.imread and the pipeline per image, one float32 .npy per image):
  images/s, size on disk, and whether the normalised crops are bit-identical;
- evaluation: the torch backend (batch norms folded, and in the graph's op order) against the TF
  backend running the same frozen graph on the same cached inputs with the same thread count and
  batch size, each in a fresh process: images/s, top-1 agreement and logit difference; on CUDA
  (when present) images/s and the projected time for 50,000 images;
- memory: peak resident memory of evaluation streaming a synthetic 50,000-image cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmark.bench.timed import KINDS
from benchmark.families import FAMILIES


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


# What each command imports before its first stage runs (the entry points import lazily; see tests).
STARTUP = {
    "python -m preprocessing (OpenCV or Pillow pipeline)": "import preprocessing.__main__, benchmark.run, preprocessing.cache",
    "python -m benchmark.mlperf_log": "import benchmark.mlperf_log",
    "python -m benchmark (torch backend)": "import benchmark.__main__, benchmark.run, benchmark.evaluation.loop, benchmark.convert",
    "python -m benchmark.loadgen (torch backend)": "import benchmark.loadgen.run, benchmark.evaluation.loop, benchmark.convert, mlperf_loadgen",
    "python -m benchmark backend=tf (or reference=tf)": "import benchmark.run, benchmark.evaluation.loop, benchmark.runtimes.tf; "
                                                        "from preprocessing.tf_import import import_tensorflow; import_tensorflow()",
}


def bench_startup(repeats: int = 3) -> list[tuple[str, float]]:
    """Each command's start-up: a fresh interpreter importing what it imports before its first stage
    (median of `repeats` processes)."""
    import statistics
    import subprocess

    rows = []
    for name, code in STARTUP.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            times.append(time.perf_counter() - start)
        rows.append((name, statistics.median(times)))
    return rows


def mlperf_loop(paths: list[str], out: Path, settings, normalization: str, threads: int | None = None) -> None:
    """MLPerf's reference cache build as its current `imagenet.py` runs it: the list cut into
    `threads` contiguous parts (default `os.cpu_count()`), each run by a thread of a pool, OpenCV's
    own threads left alone; per image cv2.imread, the pipeline, one float32 .npy. Nothing checked."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    from benchmark.evaluation.normalize import NORMALIZERS
    from preprocessing.pipelines import CV2_INTERPOLATION, center_crop, resized_size

    def process(part: list[tuple[int, str]]) -> None:
        for i, path in part:
            img = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            h, w = resized_size(img.shape[0], img.shape[1], settings.image_size, settings.crop_percent)
            img = cv2.resize(img, (w, h), interpolation=CV2_INTERPOLATION[settings.interpolation])
            np.save(out / f"{i}.npy", NORMALIZERS[normalization](center_crop(img, settings.image_size)))

    items = list(enumerate(paths))
    n = min(threads or os.cpu_count() or 1, len(items))
    per = len(items) // n
    parts = [items[k * per:(k + 1) * per] for k in range(n)] + ([items[n * per:]] if len(items) % n else [])
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(process, parts))


def stage_costs(dataset, settings, normalization: str, workdir: Path) -> dict[str, dict[str, float]]:
    """Milliseconds per image of each step, one thread, one OpenCV thread: where each build's time goes."""
    import hashlib

    import cv2

    from benchmark.evaluation.normalize import NORMALIZERS
    from preprocessing.pipelines import CV2_INTERPOLATION, center_crop, decode_opencv, read_file, resized_size

    ours = dict.fromkeys(("read the file", "sha256 of the bytes", "decode (cv2.imdecode, RGB)", "resize and crop",
                          "store uint8 in the memory map"), 0.0)
    theirs = dict.fromkeys(("cv2.imread", "BGR to RGB", "resize and crop", "normalise to float32",
                            "np.save one .npy"), 0.0)
    stored = np.lib.format.open_memmap(workdir / "stages.npy", mode="w+", dtype=np.uint8,
                                    shape=(len(dataset), settings.image_size, settings.image_size, 3))
    interpolation = CV2_INTERPOLATION[settings.interpolation]

    def resize_crop(img):
        h, w = resized_size(img.shape[0], img.shape[1], settings.image_size, settings.crop_percent)
        return center_crop(cv2.resize(img, (w, h), interpolation=interpolation), settings.image_size)

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    for i in range(len(dataset)):
        path = str(dataset.path(i))
        steps = [lambda _: read_file(path), lambda data: (data, hashlib.sha256(data).hexdigest())[0],
                 lambda data: decode_opencv(data, path), resize_crop, lambda img: stored.__setitem__(i, img)]
        value = None
        for name, step in zip(ours, steps):
            start = time.perf_counter()
            value = step(value)
            ours[name] += time.perf_counter() - start
        steps = [lambda _: cv2.imread(path), lambda img: cv2.cvtColor(img, cv2.COLOR_BGR2RGB), resize_crop,
                 NORMALIZERS[normalization], lambda x: np.save(workdir / "stage.npy", x)]
        for name, step in zip(theirs, steps):
            start = time.perf_counter()
            value = step(value)
            theirs[name] += time.perf_counter() - start
    cv2.setNumThreads(threads)
    (workdir / "stages.npy").unlink()
    return {"harness": {k: v / len(dataset) * 1e3 for k, v in ours.items()},
            "MLPerf's loop": {k: v / len(dataset) * 1e3 for k, v in theirs.items()}}


def bench_cache(dataset, settings, normalization: str, workdir: Path, repeats: int) -> dict:
    """The harness's build against MLPerf's loop with its thread pool and with one thread,
    interleaved `repeats` times, the best of each kept."""
    import shutil

    import cv2

    from benchmark.evaluation.normalize import Normalizer
    from preprocessing.cache import default_workers, open_cache

    paths = [str(dataset.path(i)) for i in range(len(dataset))]
    best = dict.fromkeys(("ours", "one_worker", "baseline", "baseline_one"), float("inf"))
    for round in range(repeats):
        for key, threads in (("baseline", None), ("baseline_one", 1)):
            baseline_dir = workdir / key
            shutil.rmtree(baseline_dir, ignore_errors=True)
            baseline_dir.mkdir()
            opencv_threads = cv2.getNumThreads()
            if threads == 1:
                cv2.setNumThreads(1)  # the single-threaded loop: one process, one OpenCV thread
            start = time.perf_counter()
            mlperf_loop(paths, baseline_dir, settings, normalization, threads)
            best[key] = min(best[key], time.perf_counter() - start)
            cv2.setNumThreads(opencv_threads)

        cache_dir = workdir / f"cache{round}"  # a fresh build each round; the last is kept for evaluation
        start = time.perf_counter()
        cache = open_cache(dataset, settings, cache_dir, default_workers(), progress=False)
        best["ours"] = min(best["ours"], time.perf_counter() - start)
        start = time.perf_counter()  # one worker: what per-image work alone gives
        open_cache(dataset, settings, workdir / f"single{round}", 1, progress=False)
        best["one_worker"] = min(best["one_worker"], time.perf_counter() - start)
        shutil.rmtree(workdir / f"single{round}")
    normalize = Normalizer(normalization)
    baseline_dir = workdir / "baseline"
    identical = all(np.load(baseline_dir / f"{i}.npy").tobytes() == normalize(cache.images[i:i + 1])[0].tobytes()
                    for i in range(len(dataset)))
    baseline_bytes = sum(p.stat().st_size for p in baseline_dir.iterdir())
    ours_bytes = (cache.folder / "images.npy").stat().st_size
    return {"n": len(dataset), **{f"{k}_ips": len(dataset) / v for k, v in best.items()},
            "ours_bytes": ours_bytes, "baseline_bytes": baseline_bytes, "identical": identical,
            "workers": default_workers(), "cpu_count": os.cpu_count(), "cache_dir": cache_dir,
            "stages": stage_costs(dataset, settings, normalization, workdir)}


# MLPerf's loop as a script of its own, as its users run it (threads: os.cpu_count())
BASELINE_LOOP = """
import sys
from pathlib import Path
from benchmark.bench.__main__ import mlperf_loop
from preprocessing.pipelines import make_settings
root, out = Path(sys.argv[1]), Path(sys.argv[2])
names = [line.split()[0] for line in (root / "val_map.txt").read_text().splitlines()]
mlperf_loop([str(root / name) for name in names], out, make_settings("mlperf", 224, "linear"), "mobilenet")
"""


def bench_cache_end_to_end(dataset, n: int, workdir: Path, repeats: int) -> dict:
    """Process wall time, start-up included: `python -m preprocessing` against MLPerf's loop as a
    script (a pool of os.cpu_count() threads, cv2.imread and the pipeline per image, a float32 .npy
    each) over `n` images (the dataset's files listed again under new names until there are `n`),
    interleaved, best of each."""
    import shutil
    import subprocess

    root = workdir / "e2e-images"
    root.mkdir()
    lines = []
    for k in range(n):
        name = f"ILSVRC2012_val_{k + 1:08d}.JPEG"
        (root / name).symlink_to(Path(dataset.path(k % len(dataset))).resolve())
        lines.append(f"{name} {dataset.labels[k % len(dataset)]}\n")
    (root / "val_map.txt").write_text("".join(lines))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    ours = baseline = float("inf")
    for r in range(repeats):
        out = workdir / f"e2e-baseline{r}"
        out.mkdir()
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", BASELINE_LOOP, str(root), str(out)], env=env, check=True)
        baseline = min(baseline, time.perf_counter() - start)
        shutil.rmtree(out)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "preprocessing", f"dataset.root={root}", f"cache_dir={workdir / f'e2e{r}'}", "model.image_size=224",
                        "progress=false"], env=env, check=True, capture_output=True)
        ours = min(ours, time.perf_counter() - start)
        shutil.rmtree(workdir / f"e2e{r}")
    return {"n": n, "ours_s": ours, "baseline_s": baseline}


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
    the batch size, and at batch 1 on the first `batch1_images` images."""
    import subprocess

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
    runs = [(b, "cpu", batch_size) for b in backends]
    runs += [("torch", "cuda", 256)] if torch.cuda.is_available() else []
    if batch1_images:
        runs += [(b, "cpu", 1) for b in backends if b != "torch-graph-order"]
    best: dict = {}
    for _ in range(repeats):
        for backend, device, batch in runs:
            out = workdir / f"{arch}-{backend}-{device}-{batch}.npy"
            job = {"arch": arch, "graph": str(graph_path), "images": str(images_path),
                   "normalization": model.normalization, "input_tensor": model.input_tensor,
                   "logits_tensor": model.logits_tensor, "backend": backend, "device": device,
                   "batch_size": batch, "threads": torch.get_num_threads(),
                   "weights": str(weights), "out": str(out), "onnx": str(onnx) if onnx else None,
                   "limit": batch1_images if batch == 1 else None}
            proc = subprocess.run([sys.executable, "-m", "benchmark.bench.timed", json.dumps(job)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"timing {backend} on {device} failed:\n{proc.stderr[-3000:]}")
            ips = json.loads(proc.stdout.strip().splitlines()[-1])["images_per_s"]
            key = (backend, device, batch)
            best[key] = {**job, "images_per_s": max(ips, best.get(key, {}).get("images_per_s", 0.0))}
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


MEMORY_PROBE = """
import sys, numpy as np, torch
from benchmark.evaluation.loop import logits
from benchmark.evaluation.normalize import Normalizer
from benchmark.runtimes.pytorch import TorchRuntime
images = np.load(sys.argv[1], mmap_mode="r")
model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 1001))
if sys.argv[2] == "plain":  # the baseline: slicing the memory map, pages kept
    import benchmark.evaluation.loop as ev
    ev.read_batch = lambda a, i, j: np.array(a[i:j])
logits(TorchRuntime(model, Normalizer("mobilenet"), "cpu"), images, int(sys.argv[3]), False)
# VmHWM is this program's own peak; ru_maxrss would also count the parent it was forked from.
print(next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


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


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
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


MEMORY_BATCH = 64  # the issue's figure; the default CPU batch (16) holds less


def bench_memory(n: int, batch_size: int, workdir: Path) -> dict:
    """Peak resident memory of evaluation streaming a synthetic n-image cache (a sparse file), with
    a model that costs nothing, so the data path alone is measured; each run in a fresh process."""
    import subprocess

    path = workdir / "synthetic.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 224, 224, 3)).flush()
    peaks = {}
    for mode in ("harness", "plain"):
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), mode, str(batch_size)],
                             capture_output=True, text=True, check=True)
        peaks[mode] = int(out.stdout.split()[-1])
    path.unlink()
    return {"n": n, "cache_bytes": n * 224 * 224 * 3, **peaks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--dataset", type=Path, required=True,
                        help="folder of JPEGs with val_map.txt (MLPerf's baseline reads files with cv2.imread)")
    parser.add_argument("--images", type=int, default=1000, help="images per measurement")
    for f in FAMILIES.values():  # one option per model family the bench times (its record's bench_flag)
        if f.bench_flag:
            parser.add_argument(f"--{f.bench_flag}", action="append", default=[], dest=f.name,
                                metavar="GRAPH",
                                help=f"a {f.title} frozen graph (224 input), or 'fixture': MLPerf's structure with "
                                     f"random weights; may be given more than once")
    parser.add_argument("--batch-size", type=int, default=16, help="CPU batch size (CUDA runs use 256)")
    parser.add_argument("--repeats", type=int, default=2, help="timed builds and passes per measurement (the best is kept)")
    parser.add_argument("--memory-images", type=int, default=0,
                        help="also measure peak memory streaming a synthetic cache of this many images")
    parser.add_argument("--batch1-images", type=int, default=200,
                        help="also time every backend at batch 1 on this many images (0: no batch-1 rows)")
    parser.add_argument("--startup-repeats", type=int, default=3,
                        help="fresh interpreters per command for the start-up times (0: none)")
    parser.add_argument("--end-to-end-images", type=int, default=4000,
                        help="also time the cache build as a command (process wall time) on this many images (0: no)")
    parser.add_argument("--loadgen", action="store_true",
                        help="also time each model as LoadGen's Offline SUT against the evaluation loop")
    parser.add_argument("--out", type=Path, default=None, help="also write the report (Markdown) here")
    args = parser.parse_args(argv)

    from preprocessing.cache import open_cache
    from preprocessing.dataset import load_dataset
    from preprocessing.pipelines import make_settings

    dataset = load_dataset(args.dataset, limit=args.images, layout="val_map")
    cores_before = effective_cores()
    lines = ["# Benchmarks", "", *[f"- {m}" for m in machine()], "CORES", ""]
    with tempfile.TemporaryDirectory() as tmp:
        c = bench_cache(dataset, make_settings("mlperf", 224, "linear"), "mobilenet", Path(tmp), args.repeats)
        lines += [f"## Cache build (MobileNet-v1 MLPerf pipeline, 224; best of {args.repeats})", "",
                  "| measure | harness | MLPerf's loop | ratio |", "|---|---|---|---|",
                  f"| images/s ({c['n']} images) | {c['ours_ips']:.1f} ({c['workers']} threads) | "
                  f"{c['baseline_ips']:.1f} (as MLPerf runs it: {c['cpu_count']} threads, OpenCV's own left alone) | "
                  f"{c['ours_ips'] / c['baseline_ips']:.2f}x |",
                  f"| images/s, one thread each | {c['one_worker_ips']:.1f} | {c['baseline_one_ips']:.1f} "
                  f"(1 thread, 1 OpenCV thread) | {c['one_worker_ips'] / c['baseline_one_ips']:.2f}x |",
                  f"| size on disk | {c['ours_bytes'] / 1e6:.1f} MB uint8 | {c['baseline_bytes'] / 1e6:.1f} MB "
                  f"float32 .npy | {c['baseline_bytes'] / c['ours_bytes']:.2f}x smaller |",
                  f"| normalised inputs bit-identical | {'yes' if c['identical'] else 'NO'} | | |", "",
                  "Where the time goes (ms per image, one thread, one OpenCV thread, every image once):", "",
                  "| build | step | ms |", "|---|---|---|"]
        for build, steps in c["stages"].items():
            lines += [f"| {build} | {step} | {ms:.3f} |" for step, ms in steps.items()]
            lines.append(f"| {build} | total | {sum(steps.values()):.3f} |")
        lines.append("")
        if args.end_to_end_images:
            e = bench_cache_end_to_end(dataset, args.end_to_end_images, Path(tmp), args.repeats)
            lines += [f"End to end, each a command in a fresh process (start-up included), {e['n']} images (the "
                      f"{len(dataset)} listed again under new names), best of {args.repeats}: `python -m "
                      f"preprocessing` {e['ours_s']:.2f} s, MLPerf's loop as a script (as MLPerf runs it) "
                      f"{e['baseline_s']:.2f} s: {e['baseline_s'] / e['ours_s']:.2f}x.", ""]
        graphs = [(f.name, g) for f in FAMILIES.values() if f.bench_flag for g in getattr(args, f.name)]
        evals, loadgen = [], []
        for i, (arch, given) in enumerate(graphs):
            workdir = Path(tmp) / f"{i}-{arch}"  # each graph's conversions and logits apart
            workdir.mkdir()
            graph = fixture_graph(arch, dataset, workdir) if given == "fixture" else Path(given)
            if not graph.is_file():
                parser.error(f"{graph}: frozen graph not found ({arch})")
            settings = make_settings("mlperf", 224, model_config(arch).mlperf_interpolation)
            cache = open_cache(dataset, settings, c["cache_dir"], progress=False)
            name = f"{arch} ({source_name(given, graph)})"
            evals.append({**bench_eval(arch, graph, cache.folder / "images.npy", args.batch_size, args.repeats,
                                       workdir, min(args.batch1_images, args.images)), "name": name})
            if args.loadgen:
                loadgen.append({**bench_loadgen(arch, graph, cache.folder / "images.npy", args.batch_size,
                                                args.repeats, workdir), "name": name})
        if evals:
            lines += [f"## Evaluation ({args.images} cached images at batch size {args.batch_size} on CPU, the "
                      f"first {min(args.batch1_images, args.images)} at batch 1; each backend in its own process, "
                      f"best of {args.repeats})", "",
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
            lines += ["", f"For scale: a 4096 x 4096 float32 matrix product runs at {matmul_gflops():.0f} GFLOP/s "
                      "with the same threads.", ""]
        if loadgen:
            lines += [f"## LoadGen's overhead (Offline, performance mode, {args.images} cached images, batch size "
                      f"{args.batch_size}, one process, the two interleaved, best of {args.repeats})", "",
                      "| model | through LoadGen (samples/s) | evaluation loop (images/s) | ratio |",
                      "|---|---|---|---|"]
            for g in loadgen:
                lines.append(f"| {g['name']} | {g['loadgen_ips']:.1f} | {g['direct_ips']:.1f} | "
                             f"{g['loadgen_ips'] / g['direct_ips']:.3f}x |")
            lines += ["", "LoadGen's samples/s is its own figure (samples over the query's time); its sample "
                      "library holds the inputs normalised in memory, while the loop reads and normalises "
                      "each batch from the cache.", ""]
        if args.memory_images:
            m = bench_memory(args.memory_images, MEMORY_BATCH, Path(tmp))
            lines += ["## Memory: evaluation streaming the cache", "",
                      "| measure | harness | memory-map slicing | ratio |", "|---|---|---|---|",
                      f"| peak resident memory, {m['n']} images ({m['cache_bytes'] / 1e9:.1f} GB cache), batch "
                      f"{MEMORY_BATCH} | {m['harness'] / 1e9:.2f} GB | {m['plain'] / 1e9:.2f} GB | "
                      f"{m['plain'] / m['harness']:.1f}x less |", ""]
    if args.startup_repeats:
        lines += ["## Start-up (a fresh interpreter importing what each command imports before its first stage; "
                  f"median of {args.startup_repeats})", "", "| command | seconds |", "|---|---|",
                  *[f"| {name} | {seconds:.2f} |" for name, seconds in bench_startup(args.startup_repeats)], ""]
    cores_after = effective_cores()
    lines[lines.index("CORES")] = (f"- effective parallel cores (a CPU-bound probe in one process per visible core "
                                   f"against one alone): {cores_before:.2f} before the runs, {cores_after:.2f} "
                                   f"after")
    write_report(lines, args.out)
    return 0


def write_report(lines: list[str], out: Path | None) -> None:
    """The report on stdout, and as Markdown at `out` when given."""
    report = "\n".join(lines)
    print(report)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report + "\n")


if __name__ == "__main__":
    sys.exit(main())
