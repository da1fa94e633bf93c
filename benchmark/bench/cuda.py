"""python -m benchmark.bench.cuda --dataset DIR --model ARCH=MODEL.safetensors [...] [--out FILE]

The torch evaluator on CUDA against the same model on the CPU, on a machine that needs neither
TensorFlow nor the frozen graphs: the models are `python -m benchmark.export` files (or, for timing
alone, `ARCH=random`: the architecture with seeded random weights). For each model it builds the
crop cache of DIR with MLPerf's pipeline, checks that CUDA and the CPU agree image by image (the
CUDA path runs with TF32 off and deterministic cuDNN, as `python -m benchmark device=cuda`), and
times the CUDA evaluation loop (uint8 crops to the device, MLPerf's normalisation there) over the
cached images repeated to `--timed-images`, best of `--repeats`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def random_model(arch: str, seed: int = 0):
    """The architecture of MLPerf's graph for `arch` (MobileNet-v1 1.0/224, ResNet-50 v1.5) with
    seeded random weights, batch norms folded: for timing, not for accuracy."""
    import torch

    from benchmark.nn.layers import ConvSpec
    from benchmark.nn.mobilenet_v1 import MobileNetV1, MobileNetV1Spec
    from benchmark.nn.resnet50 import BlockSpec, ResNet50, ResNetSpec

    def conv(name, cin, cout, k, s, depthwise=False, padding=None):
        return ConvSpec(name, cin, cout, k, s, 1e-3, True, depthwise, padding)

    torch.manual_seed(seed)
    if arch == "mobilenet_v1":
        layers, cin = [conv("Conv2d_0", 3, 32, 3, 2)], 32
        for i, (cout, s) in enumerate([(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5,
                                       (1024, 2), (1024, 1)], 1):
            layers += [conv(f"Conv2d_{i}_depthwise", cin, cin, 3, s, True), conv(f"Conv2d_{i}_pointwise", cin, cout, 1, 1)]
            cin = cout
        model = MobileNetV1(MobileNetV1Spec(layers, 7, 2, 1001, 224, folded=True))
    else:
        stages, cin = [], 64
        for i, (blocks, width, stride) in enumerate([(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)], 1):
            stage = []
            for b in range(blocks):
                s = stride if b == 0 else 1
                name = f"stage{i}_block{b}"
                stage.append(BlockSpec(conv(f"{name}_1", cin, width, 1, 1, padding=[0] * 4),
                                       conv(f"{name}_2", width, width, 3, s, padding=[1] * 4),
                                       conv(f"{name}_3", width, width * 4, 1, 1, padding=[0] * 4),
                                       conv(f"{name}_sc", cin, width * 4, 1, s, padding=[0] * 4) if b == 0 else None))
                cin = width * 4
            stages.append(stage)
        model = ResNet50(ResNetSpec(conv("stem", 3, 64, 7, 2, padding=[3] * 4), 3, 2, stages, 1001, 224, folded=True))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (1.0 / max(p[0].numel(), 1)) ** 0.5)
    return model.eval()


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench.cuda", description=__doc__.split("\n\n")[1])
    parser.add_argument("--dataset", type=Path, required=True, help="folder of JPEGs with val_map.txt")
    parser.add_argument("--model", action="append", required=True,
                        help="ARCH=PATH.safetensors (from benchmark.export) or ARCH=random; repeatable")
    parser.add_argument("--images", type=int, default=None, help="use the first N images of DIR")
    parser.add_argument("--timed-images", type=int, default=10_000, help="images per timed CUDA pass")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the report (Markdown) here")
    args = parser.parse_args(argv)

    import torch

    from benchmark.bench import __main__ as bench
    from benchmark.convert import load_exported
    from benchmark.evaluation.loop import logits
    from benchmark.evaluation.normalize import Normalizer
    from benchmark.evaluation.scoring import score
    from benchmark.nn.layers import fold_batch_norms
    from benchmark.runtimes.pytorch import TorchRuntime
    from preprocessing.cache import open_cache
    from preprocessing.dataset import load_dataset
    from preprocessing.pipelines import make_settings

    def torch_logits(model, images, normalize, device, batch_size):
        return logits(TorchRuntime(model, normalize, device), images, batch_size, False)

    if not torch.cuda.is_available():
        parser.error("PyTorch sees no CUDA device")
    dataset = load_dataset(args.dataset, limit=args.images, layout="val_map")
    props = torch.cuda.get_device_properties(0)
    lines = ["# CUDA", "", *[f"- {m}" for m in bench.machine()],
             f"- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, torch CUDA {torch.version.cuda}", "",
             f"| model | weights | batch | CUDA images/s (best of {args.repeats}, {args.timed_images} images) | "
             f"50,000 images | agreement CUDA vs CPU ({len(dataset)} images) | max abs logit diff | top-1 CUDA / CPU | "
             "passes ran on |", "|---|---|---|---|---|---|---|---|---|"]
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
            config = bench.model_config(arch)
            cache = open_cache(dataset, make_settings("mlperf", 224, config.mlperf_interpolation), Path(tmp),
                               progress=False)
            normalize = Normalizer(config.normalization)
            # each pass says where it ran: the comparison must be of two devices, not one pass twice
            cpu, cpu_ran = pass_on(TorchRuntime(model, normalize, "cpu"), cache.images, 16)
            cuda, cuda_ran = pass_on(TorchRuntime(model, normalize, "cuda"), cache.images, args.batch_size)
            check_two_devices(cpu_ran, cuda_ran)
            labels = np.asarray(dataset.labels)
            timed = np.resize(np.asarray(cache.images), (args.timed_images, *cache.images.shape[1:]))
            best = 0.0
            for _ in range(args.repeats):
                torch.cuda.synchronize()
                start = time.perf_counter()
                torch_logits(model, timed, normalize, "cuda", args.batch_size)
                torch.cuda.synchronize()  # logits come back to the host each batch: already synchronous
                best = max(best, args.timed_images / (time.perf_counter() - start))
            weights = "random (timing only)" if source == "random" else Path(source).name
            lines.append(f"| {arch} | {weights} | {args.batch_size} | {best:.0f} | {50000 / best:.0f} s | "
                         f"{int((cuda.argmax(1) == cpu.argmax(1)).sum())}/{len(cpu)} | "
                         f"{float(np.abs(cuda - cpu).max()):.2g} | "
                         f"{score(cuda, labels).top1:.1f} % / {score(cpu, labels).top1:.1f} % | "
                         f"{cuda_ran} / {cpu_ran} |")
            model.cpu()
    lines += ["", "CUDA images/s: the evaluation loop as `python -m benchmark device=cuda` runs it (uint8 crops to "
              "the GPU, normalised there, logits back to the host per batch), crops read from the cache in memory."]
    bench.write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
