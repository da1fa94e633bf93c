"""python -m benchmark.bench [--images N] [--mobilenet PATH] [--resnet PATH] [--out FILE]

Measures the harness against baselines run in the same process, and prints each figure, the
baseline's and the ratio (no timing is asserted anywhere):

- cache build: the harness (all cores, one memory-mapped uint8 array) against what MLPerf's
  reference does (one process, cv2.imread and the pipeline per image, one float32 .npy per image):
  images/s, size on disk, and whether the normalised crops are bit-identical;
- evaluation: the torch backend against the TF backend running the same frozen graph on the same
  cached inputs with the same thread count: images/s and top-1 agreement.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# A package's __main__: the cache build's worker processes then do not import this module (and
# with it torch), so the measured build is the one users get from `python -m benchmark`.
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def machine() -> list[str]:
    import cv2
    import torch

    from ..report import _distribution_version

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return [f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"machine: {cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}",
            f"versions: python {platform.python_version()}, torch {torch.__version__}, "
            f"tensorflow {_distribution_version('tensorflow', 'tensorflow-cpu')}, opencv {cv2.__version__}, "
            f"numpy {np.__version__}"]


def bench_cache(dataset, settings, normalization: str, workdir: Path) -> dict:
    from preprocessing.cache import default_workers, open_cache
    from preprocessing.pipelines import crop

    from ..normalize import NORMALIZERS, Normalizer

    import cv2

    cv2.setNumThreads(1)  # the baseline is one process with one OpenCV thread, as MLPerf's loop
    baseline_dir = workdir / "baseline"
    baseline_dir.mkdir()
    start = time.perf_counter()
    for i in range(len(dataset)):
        np.save(baseline_dir / f"{i}.npy", NORMALIZERS[normalization](crop(dataset.path(i), settings)))
    baseline_s = time.perf_counter() - start
    cv2.setNumThreads(0)

    start = time.perf_counter()
    cache = open_cache(dataset, settings, workdir / "cache", default_workers(), progress=False)
    ours_s = time.perf_counter() - start
    normalize = Normalizer(normalization)
    identical = all(np.load(baseline_dir / f"{i}.npy").tobytes() == normalize(cache.images[i:i + 1])[0].tobytes()
                    for i in range(len(dataset)))
    baseline_bytes = sum(p.stat().st_size for p in baseline_dir.iterdir())
    ours_bytes = (cache.folder / "images.npy").stat().st_size
    return {"n": len(dataset), "ours_ips": len(dataset) / ours_s, "baseline_ips": len(dataset) / baseline_s,
            "ours_bytes": ours_bytes, "baseline_bytes": baseline_bytes, "identical": identical,
            "workers": default_workers(), "images": cache.images}


def bench_eval(arch: str, graph_path: Path, input_tensor: str, logits_tensor: str, normalization: str,
               images: np.ndarray, batch_size: int) -> dict:
    import torch

    from ..checkpoint import open_checkpoint
    from ..convert import load_converted
    from ..evaluate import graph_logits, torch_logits
    from ..graph import FrozenGraph
    from ..normalize import Normalizer
    from ..tf_backend import TFGraphModel

    ckpt = open_checkpoint(graph_path)
    graph = FrozenGraph.from_checkpoint(ckpt)
    model, _ = load_converted(arch, ckpt, graph, None)
    normalize = Normalizer(normalization)
    threads = torch.get_num_threads()
    tf_model = TFGraphModel(graph, input_tensor, logits_tensor, images.shape[1], threads)
    warm = images[:batch_size]
    torch_logits(model, warm, normalize, torch.device("cpu"), batch_size, False)
    graph_logits(tf_model, warm, normalize, batch_size, False)
    start = time.perf_counter()
    ours = torch_logits(model, images, normalize, torch.device("cpu"), batch_size, False)
    torch_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = graph_logits(tf_model, images, normalize, batch_size, False)
    tf_s = time.perf_counter() - start
    return {"arch": arch, "graph": str(graph_path), "n": len(images), "threads": threads,
            "torch_ips": len(images) / torch_s, "tf_ips": len(images) / tf_s,
            "agreement": int((ours.argmax(1) == theirs.argmax(1)).sum()),
            "max_abs_logit_diff": float(np.abs(ours - theirs).max())}


MEMORY_PROBE = """
import resource, sys, numpy as np, torch
from benchmark.evaluate import read_batch, torch_logits
from benchmark.normalize import Normalizer
images = np.load(sys.argv[1], mmap_mode="r")
model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 1001))
if sys.argv[2] == "plain":  # the baseline: slicing the memory map, pages kept
    import benchmark.evaluate as ev
    ev.read_batch = lambda a, i, j: np.array(a[i:j])
torch_logits(model, images, Normalizer("mobilenet"), torch.device("cpu"), int(sys.argv[3]), False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


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
    parser.add_argument("--dataset", type=Path, default=SHARED / "imagenet-samples",
                        help="folder of JPEGs with val_map.txt (default: the shared sample images)")
    parser.add_argument("--images", type=int, default=1000, help="images per measurement")
    parser.add_argument("--mobilenet", type=Path,
                        default=SHARED / "models/tf-slim-frozen-2017/mobilenet_v1_0.25_224/frozen_graph.pb")
    parser.add_argument("--resnet", type=Path, default=None, help="a ResNet-50 frozen graph (optional)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--memory-images", type=int, default=0,
                        help="also measure peak memory streaming a synthetic cache of this many images")
    parser.add_argument("--out", type=Path, default=None, help="also write the report (Markdown) here")
    args = parser.parse_args(argv)

    import benchmark  # noqa: F401  (torchvision before TensorFlow)
    from preprocessing.dataset import load_dataset
    from preprocessing.pipelines import make_settings

    dataset = load_dataset(args.dataset, limit=args.images)
    lines = ["# Benchmarks", "", *[f"- {m}" for m in machine()], ""]
    with tempfile.TemporaryDirectory() as tmp:
        c = bench_cache(dataset, make_settings("mlperf", 224, "linear"), "mobilenet", Path(tmp))
        lines += ["## Cache build (MobileNet-v1 MLPerf pipeline, 224)", "",
                  "| measure | harness | MLPerf-style baseline | ratio |", "|---|---|---|---|",
                  f"| images/s ({c['n']} images) | {c['ours_ips']:.1f} ({c['workers']} processes) | "
                  f"{c['baseline_ips']:.1f} (1 process) | {c['ours_ips'] / c['baseline_ips']:.2f}x |",
                  f"| size on disk | {c['ours_bytes'] / 1e6:.1f} MB uint8 | {c['baseline_bytes'] / 1e6:.1f} MB "
                  f"float32 .npy | {c['baseline_bytes'] / c['ours_bytes']:.2f}x smaller |",
                  f"| normalised inputs bit-identical | {'yes' if c['identical'] else 'NO'} | | |", ""]
        runs = []
        if args.mobilenet and args.mobilenet.exists():
            runs.append(bench_eval("mobilenet_v1", args.mobilenet, "input:0", "MobilenetV1/Predictions/Reshape:0",
                                   "mobilenet", c["images"], args.batch_size))
        if args.resnet:
            from preprocessing.cache import open_cache

            r_images = open_cache(dataset, make_settings("mlperf", 224, "area"), Path(tmp) / "cache",
                                  progress=False).images
            runs.append(bench_eval("resnet50", args.resnet, "input_tensor:0", "resnet_model/dense/BiasAdd:0",
                                   "vgg", r_images, args.batch_size))
        if runs:
            lines += ["## Evaluation on CPU (same cached inputs, same threads)", "",
                      "| model | torch images/s | TF images/s | ratio | top-1 agreement | max abs logit diff |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {r['arch']} ({Path(r['graph']).parent.name}/{Path(r['graph']).name}) | {r['torch_ips']:.1f} | "
                      f"{r['tf_ips']:.1f} | {r['torch_ips'] / r['tf_ips']:.2f}x | {r['agreement']}/{r['n']} | "
                      f"{r['max_abs_logit_diff']:.2g} |" for r in runs]
            lines.append("")
        if args.memory_images:
            m = bench_memory(args.memory_images, args.batch_size, Path(tmp))
            lines += ["## Memory: evaluation streaming the cache", "",
                      "| measure | harness | memory-map slicing | ratio |", "|---|---|---|---|",
                      f"| peak resident memory, {m['n']} images ({m['cache_bytes'] / 1e9:.1f} GB cache), batch "
                      f"{args.batch_size} | {m['harness'] / 1e9:.2f} GB | {m['plain'] / 1e9:.2f} GB | "
                      f"{m['plain'] / m['harness']:.1f}x less |", ""]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
