"""MLPerf's reference cache build, the bench's baseline: `python -m benchmark.bench.mlperf_loop ROOT OUT`
runs it as a script of its own, as MLPerf's users run it (threads: os.cpu_count())."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np


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


def main(argv: list[str]) -> None:
    from preprocessing.pipelines import make_settings

    root, out = Path(argv[0]), Path(argv[1])
    names = [line.split()[0] for line in (root / "val_map.txt").read_text().splitlines()]
    mlperf_loop([str(root / name) for name in names], out, make_settings("mlperf", 224, "linear"), "mobilenet")


if __name__ == "__main__":
    main(sys.argv[1:])
