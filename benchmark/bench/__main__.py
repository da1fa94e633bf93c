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
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmark.bench import batch1, cache, evaluation, loadgen, machine, memory, precision, startup
from benchmark.families import FAMILIES


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
    parser.add_argument("--batch1-rounds", type=int, default=0,
                        help="also settle batch 1 against OpenVINO and ONNX Runtime: this many rounds, each timing "
                             "every backend once on the batch-1 images (0: none)")
    parser.add_argument("--startup-repeats", type=int, default=3,
                        help="fresh interpreters per command for the start-up times (0: none)")
    parser.add_argument("--end-to-end-images", type=int, default=4000,
                        help="also time the cache build as a command (process wall time) on this many images (0: no)")
    parser.add_argument("--sweep", action="store_true",
                        help="also time the sample sweep's four caches built in one pass against one by one")
    parser.add_argument("--loadgen", action="store_true",
                        help="also time each model as LoadGen's Offline SUT against the evaluation loop")
    parser.add_argument("--precision", action="store_true",
                        help="also bf16 and int8 against exact fp32: the harness's, ONNX Runtime's and OpenVINO's "
                             "(NNCF) int8, calibrated on the same crops")
    parser.add_argument("--calibration-images", type=int, default=500,
                        help="--precision: int8 calibrated on every other cached crop, at most this many")
    parser.add_argument("--out", type=Path, default=None, help="also write the report (Markdown) here")
    args = parser.parse_args(argv)

    from preprocessing.cache import open_cache
    from preprocessing.dataset import load_dataset
    from preprocessing.pipelines import make_settings

    dataset = load_dataset(args.dataset, limit=args.images, layout="val_map")
    cores_before = machine.effective_cores()
    lines = ["# Benchmarks", "", *[f"- {m}" for m in machine.machine()], "CORES", ""]
    batch1_images = min(args.batch1_images, args.images)
    with tempfile.TemporaryDirectory() as tmp:
        c = cache.bench_cache(dataset, make_settings("mlperf", 224, "linear"), "mobilenet", Path(tmp), args.repeats)
        e = cache.bench_cache_end_to_end(dataset, args.end_to_end_images, Path(tmp), args.repeats) \
            if args.end_to_end_images else None
        sweep = cache.bench_sweep(dataset, Path(tmp), args.repeats) if args.sweep else None
        lines += cache.render(c, args.repeats, e, len(dataset), sweep)
        graphs = [(f.name, g) for f in FAMILIES.values() if f.bench_flag for g in getattr(args, f.name)]
        evals, timed_loadgen, precisions, settled = [], [], [], []
        for i, (arch, given) in enumerate(graphs):
            workdir = Path(tmp) / f"{i}-{arch}"  # each graph's conversions and logits apart
            workdir.mkdir()
            graph = evaluation.fixture_graph(arch, dataset, workdir) if given == "fixture" else Path(given)
            if not graph.is_file():
                parser.error(f"{graph}: frozen graph not found ({arch})")
            settings = make_settings("mlperf", 224, evaluation.model_config(arch).mlperf_interpolation)
            crops = open_cache(dataset, settings, c["cache_dir"], progress=False)
            name = f"{arch} ({evaluation.source_name(given, graph)})"
            evals.append({**evaluation.bench_eval(arch, graph, crops.folder / "images.npy", args.batch_size,
                                                  args.repeats, workdir, batch1_images), "name": name})
            if args.batch1_rounds and batch1_images:
                settled.append({**batch1.bench_batch1(arch, graph, crops.folder / "images.npy",
                                                       args.batch1_rounds, batch1_images, workdir), "name": name})
            if args.precision:
                calibration = np.asarray(crops.images)[::2][:args.calibration_images]
                precisions.append({**precision.bench_precision(arch, graph, crops.folder / "images.npy",
                                                               np.asarray(dataset.labels), calibration, args.batch_size,
                                                               args.repeats, workdir, batch1_images), "name": name})
            if args.loadgen:
                timed_loadgen.append({**loadgen.bench_loadgen(arch, graph, crops.folder / "images.npy",
                                                              args.batch_size, args.repeats, workdir), "name": name})
        gemm = machine.matmul_gflops() if evals else 0.0
        lines += evaluation.render(evals, args.images, args.batch_size, batch1_images, args.repeats, gemm)
        lines += batch1.render(settled, args.batch1_rounds)
        calibrated = min(args.calibration_images, (len(dataset) + 1) // 2)
        lines += precision.render(precisions, args.images, args.batch_size, batch1_images, args.repeats,
                                  f"int8 is calibrated on every other cached crop ({calibrated} of the {len(dataset)} "
                                  "evaluated), for every quantizer alike: the sample images are not MLPerf's "
                                  "calibration images.")
        lines += loadgen.render(timed_loadgen, args.images, args.batch_size, args.repeats)
        if args.memory_images:
            lines += memory.render(memory.bench_memory(args.memory_images, memory.MEMORY_BATCH, Path(tmp)))
    if args.startup_repeats:
        lines += startup.render(startup.bench_startup(args.startup_repeats), args.startup_repeats)
    cores_after = machine.effective_cores()
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
