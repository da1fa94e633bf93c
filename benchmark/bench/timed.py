"""One timed evaluation pass, in a fresh process, as `python -m benchmark backend=...` runs it.

python -m benchmark.bench.timed '{"arch": ..., "graph": ..., "images": ..., "normalization": ...,
    "input_tensor": ..., "logits_tensor": ..., "backend": ..., "device": ..., "batch_size": ...,
    "threads": ..., "weights": ..., "out": ...}'

`backend` is torch (batch norms folded, the default), torch-graph-order (fold_bn=false) or tf. The
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
               backend: str, device: str, batch_size: int, threads: int, weights: str) -> tuple[float, np.ndarray]:
    import torch

    from ..checkpoint import open_checkpoint
    from ..evaluate import graph_logits, torch_logits
    from ..normalize import Normalizer

    torch.set_num_threads(threads)
    images = np.load(images, mmap_mode="r")
    normalize = Normalizer(normalization)
    ckpt = open_checkpoint(Path(graph))
    if backend == "tf":
        from ..graph import FrozenGraph
        from ..tf_backend import TFGraphModel

        model = TFGraphModel(FrozenGraph.from_checkpoint(ckpt), input_tensor, logits_tensor, images.shape[1],
                             threads)

        def run(x):
            return graph_logits(model, x, normalize, batch_size, False)
    else:
        from ..convert import load_converted
        from ..layers import fold_batch_norms

        model, info = load_converted(arch, ckpt, None, Path(weights))
        if info["converted"]:
            raise RuntimeError(f"{weights}: no converted weights; convert before timing")
        if backend == "torch":
            fold_batch_norms(model)

        def run(x):
            out = torch_logits(model, x, normalize, torch.device(device), batch_size, False)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return out

    run(images[:batch_size])  # warm-up: first-call allocations, kernel selection
    start = time.perf_counter()
    logits = run(images)
    return len(images) / (time.perf_counter() - start), logits


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    out = job.pop("out")
    ips, logits = timed_pass(**job)
    np.save(out, logits)
    print(json.dumps({"images_per_s": ips}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
