"""python -m benchmark.bench.cuda --dataset DIR --model ARCH=MODEL.safetensors [...] [--out FILE]

The torch evaluator on CUDA: how fast, where its time goes, and that it still computes the CPU's
answers, on a machine that needs neither TensorFlow nor the frozen graphs: the models are
`python -m benchmark.export` files (or, for timing alone, `ARCH=random`: the architecture with
seeded random weights). For each model it builds the crop cache of DIR with MLPerf's pipeline;
checks that CUDA (as `python -m benchmark device=cuda` runs it: TF32 off, deterministic cuDNN,
CUDA graphs) and the CPU agree image by image and that the CUDA graphs give the eager model's
logits bit for bit; times the evaluation loop over the cached images repeated to `--timed-images`
in a memory-mapped file, as the default and as each VARIANTS entry (the eager loop that waits for
every batch, without CUDA graphs, NCHW, cuDNN's benchmark mode, a larger batch), best of
`--repeats`; times one pass over `--full-images`; and profiles a few batches (torch.profiler:
kernels, copies, kernels run). `--device cpu` runs the same steps on the CPU, to try the command.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.runtimes import RuntimeBase


def random_model(arch: str, seed: int = 0):
    """The architecture of MLPerf's graph for `arch` with seeded random weights, batch norms folded
    (its family's random-weight builder): for timing, not for accuracy."""
    from benchmark.families import family

    return family(arch).load("random_model")(seed)


def pass_on(runtime, images, batch_size: int) -> tuple[np.ndarray, str]:
    """The runtime's logits for `images`, and the devices its weights and its last output were on
    during the pass (one name when they agree)."""
    from benchmark.evaluation.loop import logits

    seen = set()

    def record(module, args, output):
        seen.update({str(next(module.parameters()).device), str(output.device)})

    hook = runtime.model.register_forward_hook(record)
    try:
        out = logits(runtime, images, batch_size, False)
    finally:
        hook.remove()
    if not seen:
        raise RuntimeError("the pass ran no forward of the model")
    return out, "+".join(sorted(seen))


def check_two_devices(cpu_ran: str, cuda_ran: str) -> None:
    """A CPU-vs-CUDA difference means something only when the CPU pass ran on the CPU alone and the
    CUDA pass on CUDA alone."""
    if cpu_ran != "cpu" or not cuda_ran.startswith("cuda") or "+" in cuda_ran:
        raise RuntimeError(f"the CPU pass ran on {cpu_ran} and the CUDA pass on {cuda_ran}: not a comparison "
                           "of two devices")


@dataclass(frozen=True)
class Variant:
    """One way of running the torch evaluator on CUDA, timed against the others."""
    name: str
    cuda_graphs: bool = True
    overlap: bool = True  # the next batch read and sent while the GPU computes (false: the host waits)
    channels_last: bool = True
    cudnn_benchmark: bool = False  # cuDNN times its deterministic algorithms and keeps the fastest
    batch_scale: int = 1  # times --batch-size


DEFAULT = Variant("default: CUDA graphs, next batch read while the GPU computes")
VARIANTS = [
    Variant("eager, the host waits for each batch", cuda_graphs=False, overlap=False),
    Variant("eager, next batch read while the GPU computes", cuda_graphs=False),
    DEFAULT,
    Variant("CUDA graphs, NCHW layout", channels_last=False),
    Variant("CUDA graphs, cuDNN benchmark (deterministic algorithms only)", cudnn_benchmark=True),
    Variant("CUDA graphs, twice the batch", batch_scale=2),
]


class Synchronous(RuntimeBase):
    """The runtime's forward alone, without its own `submit`: the evaluation loop waits for each
    batch's logits."""

    def __init__(self, runtime):
        self.runtime, self.name, self.device = runtime, runtime.name, runtime.device
        self.inputs = runtime.inputs

    def __call__(self, x):
        return self.runtime(x)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def variant_runtime(model, normalize, device: str, variant: Variant, image_size: int):
    from benchmark.runtimes.pytorch import TorchRuntime

    runtime = TorchRuntime(model, normalize, device, image_size=image_size, cuda_graphs=variant.cuda_graphs,
                           channels_last=variant.channels_last, cudnn_benchmark=variant.cudnn_benchmark)
    return runtime if variant.overlap else Synchronous(runtime)


def time_variant(model, normalize, images, batch_size: int, device: str, variant: Variant, repeats: int,
                 image_size: int) -> tuple[float, np.ndarray]:
    """The best images/s of `repeats` evaluation passes over `images` run as `variant`, and the
    logits of the last pass."""
    from benchmark.evaluation.loop import logits

    runtime = variant_runtime(model, normalize, device, variant, image_size)
    logits(runtime, images[:batch_size], batch_size, False)  # warm-up: recording, algorithm choice
    best, out = 0.0, None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        out = logits(runtime, images, batch_size, False)
        synchronize(device)
        best = max(best, len(images) / (time.perf_counter() - start))
    return best, out


def profile(model, normalize, images, batch_size: int, device: str, variant: Variant, image_size: int,
            batches: int = 5) -> dict:
    """Where `batches` batches of the evaluation loop run as `variant` spend their time (torch.profiler):
    wall time, the device's kernels and copies, how many kernels ran, and the costliest. On a CPU,
    the operators take the kernels' place."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from benchmark.evaluation.loop import logits

    cuda = device.startswith("cuda")
    runtime = variant_runtime(model, normalize, device, variant, image_size)
    part = images[:batch_size * batches]
    logits(runtime, images[:batch_size], batch_size, False)  # warm-up outside the profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        synchronize(device)
        start = time.perf_counter()
        logits(runtime, part, batch_size, False)
        synchronize(device)
        wall_us = (time.perf_counter() - start) * 1e6
    kind, field = (DeviceType.CUDA, "self_device_time_total") if cuda else (DeviceType.CPU, "self_cpu_time_total")
    events = [e for e in prof.key_averages() if e.device_type == kind]

    def time_of(event) -> float:  # microseconds
        return getattr(event, field)

    copies = [e for e in events if e.key.startswith("Memcpy") or e.key.startswith("Memset")]
    kernels = [e for e in events if e not in copies]
    n = len(part) / batch_size
    return {"batches": n, "wall_ms": wall_us / 1e3 / n,
            "kernel_ms": sum(map(time_of, kernels)) / 1e3 / n,
            "copy_ms": sum(map(time_of, copies)) / 1e3 / n,
            "calls": sum(e.count for e in kernels) / n,
            "launches": sum(e.count for e in prof.key_averages() if e.key in HOST_LAUNCHES) / n,
            "top": [(e.key, time_of(e) / 1e3 / n) for e in sorted(kernels, key=time_of, reverse=True)[:8]]}


# the CUDA runtime calls that start work on the GPU, as the profiler names them
HOST_LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")


def memory_mapped(crops: np.ndarray, n: int, path: Path) -> np.ndarray:
    """`crops` repeated to `n` images in a .npy file, opened as the evaluation opens the cache."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=crops.dtype, shape=(n, *crops.shape[1:]))
    for start in range(0, n, len(crops)):
        out[start:start + len(crops)] = crops[:n - start]
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench.cuda", description=__doc__.split("\n\n")[1])
    parser.add_argument("--dataset", type=Path, required=True, help="folder of JPEGs with val_map.txt")
    parser.add_argument("--model", action="append", required=True,
                        help="ARCH=PATH.safetensors (from benchmark.export) or ARCH=random; repeatable")
    parser.add_argument("--images", type=int, default=None, help="use the first N images of DIR")
    parser.add_argument("--timed-images", type=int, default=10_000, help="images per timed CUDA pass")
    parser.add_argument("--full-images", type=int, default=50_000,
                        help="one pass of the default over this many images from the cache (0: none)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="all", choices=["all", "default"],
                        help="time every variant, or the default only")
    parser.add_argument("--profile-batches", type=int, default=5, help="batches profiled per variant (0: none)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N (or cpu, to try the command)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report (Markdown) here")
    args = parser.parse_args(argv)

    import torch

    from benchmark.bench import __main__ as bench
    from benchmark.bench.evaluation import model_config
    from benchmark.bench.machine import machine
    from benchmark.convert import load_exported
    from benchmark.evaluation.normalize import Normalizer
    from benchmark.evaluation.scoring import score
    from benchmark.nn.layers import fold_batch_norms
    from benchmark.runtimes.pytorch import TorchRuntime
    from preprocessing.cache import open_cache
    from preprocessing.dataset import load_dataset
    from preprocessing.pipelines import make_settings

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("PyTorch sees no CUDA device")
    dataset = load_dataset(args.dataset, limit=args.images, layout="val_map")
    variants = VARIANTS if args.variants == "all" else [DEFAULT]
    lines = ["# CUDA", "", *[f"- {m}" for m in machine()]]
    if cuda:
        props = torch.cuda.get_device_properties(args.device)
        lines.append(f"- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, torch CUDA {torch.version.cuda}")
    lines += ["- exact fp32: TF32 off, cuDNN deterministic, its algorithms chosen by heuristics (the same each run) "
              "unless a variant says otherwise", ""]
    agreement = ["| model | weights | agreement CUDA vs CPU | max abs logit diff | top-1 CUDA / CPU | passes ran on | "
                 "CUDA graphs vs eager CUDA |", "|---|---|---|---|---|---|---|"]
    timings = [f"| model | weights | variant | batch | images/s (best of {args.repeats}, {args.timed_images} images "
               "from a memory-mapped cache) | 50,000 images | logits vs the default's |", "|---|---|---|---|---|---|---|"]
    full, profiles = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.model:
            arch, _, source = item.partition("=")
            if source == "random":
                model = random_model(arch)
            else:
                model, meta = load_exported(source)
                if meta["arch"] != arch:
                    parser.error(f"{source} holds {meta['arch']}, not {arch}")
                if not model.spec.folded:
                    fold_batch_norms(model)
            weights = "random (timing only)" if source == "random" else Path(source).name
            config = model_config(arch)
            size = model.spec.image_size
            cache = open_cache(dataset, make_settings("mlperf", 224, config.mlperf_interpolation), Path(tmp),
                               progress=False)
            normalize = Normalizer(config.normalization)
            crops = np.asarray(cache.images)
            labels = np.asarray(dataset.labels)
            if cuda:
                # each pass says where it ran: the comparison must be of two devices, not one pass twice
                cpu, cpu_ran = pass_on(TorchRuntime(model, normalize, "cpu"), crops, 16)
                on_cuda, cuda_ran = pass_on(TorchRuntime(model, normalize, args.device, cuda_graphs=True),
                                            crops, args.batch_size)
                check_two_devices(cpu_ran, cuda_ran)
                eager, _ = pass_on(TorchRuntime(model, normalize, args.device), crops, args.batch_size)
                agreement.append(
                    f"| {arch} | {weights} | {int((on_cuda.argmax(1) == cpu.argmax(1)).sum())}/{len(cpu)} | "
                    f"{float(np.abs(on_cuda - cpu).max()):.2g} | {score(on_cuda, labels).top1:.1f} % / "
                    f"{score(cpu, labels).top1:.1f} % | {cuda_ran} / {cpu_ran} | "
                    f"{'bit for bit' if np.array_equal(on_cuda, eager) else 'DIFFER'} |")
            timed = memory_mapped(crops, args.timed_images, Path(tmp) / f"{arch}-timed.npy")
            results = {}
            for v in variants:
                batch = args.batch_size * v.batch_scale
                results[v] = time_variant(model, normalize, timed, batch, args.device, v, args.repeats, size)
            reference = results[DEFAULT][1]
            for v, (ips, out) in results.items():
                same = "bit for bit" if np.array_equal(out, reference) else \
                    f"max diff {float(np.abs(out - reference).max()):.2g}, top-1 {int((out.argmax(1) == reference.argmax(1)).sum())}/{len(out)}"
                timings.append(f"| {arch} | {weights} | {v.name} | {args.batch_size * v.batch_scale} | {ips:.0f} | "
                               f"{50000 / ips:.1f} s | {same} |")
            del timed
            if args.full_images:
                images = memory_mapped(crops, args.full_images, Path(tmp) / f"{arch}-full.npy")
                ips, out = time_variant(model, normalize, images, args.batch_size, args.device, DEFAULT, 1, size)
                full.append(f"| {arch} | {weights} | {args.full_images} | {args.full_images / ips:.1f} s | {ips:.0f} |")
                del images, out
                (Path(tmp) / f"{arch}-full.npy").unlink()
            for v in ([VARIANTS[0], DEFAULT] if args.variants == "all" else [DEFAULT]) if args.profile_batches else []:
                p = profile(model, normalize, crops if len(crops) >= args.batch_size * args.profile_batches else
                            np.resize(crops, (args.batch_size * args.profile_batches, *crops.shape[1:])),
                            args.batch_size, args.device, v, size, args.profile_batches)
                profiles.append((arch, v, p))
            model.cpu()
    if cuda:
        lines += [f"## CUDA against the CPU ({len(dataset)} images)", "", *agreement, ""]
    lines += ["## Evaluation loop variants", "", *timings, "",
              "images/s: the evaluation loop as `python -m benchmark` runs it (uint8 crops read from the memory-mapped "
              "cache, sent to the device, normalised there, logits back to the host), after one warm-up batch.", ""]
    if full:
        lines += ["## From the cache, end to end of the loop (the default, one pass)", "",
                  "| model | weights | images | wall | images/s |", "|---|---|---|---|---|", *full, ""]
    for arch, v, p in profiles:
        what = "kernels" if cuda else "operators (CPU)"
        lines += [f"## Profile: {arch}, {v.name} ({p['batches']:.0f} batches of {args.batch_size})", "",
                  f"Per batch: wall {p['wall_ms']:.2f} ms; device {what} {p['kernel_ms']:.2f} ms "
                  f"({p['kernel_ms'] / p['wall_ms']:.0%} of the wall); copies {p['copy_ms']:.2f} ms; "
                  f"{p['calls']:.0f} {what} run" + (f", {p['launches']:.0f} launches from the host." if cuda else "."), "", "| costliest | ms per batch |", "|---|---|",
                  *[f"| `{name[:90]}` | {ms:.3f} |" for name, ms in p["top"]], ""]
    bench.write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
