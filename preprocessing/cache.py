"""Cache stage: the uint8 crops of a whole labels list in one memory-mappable `images.npy`.

Layout: `<cache_dir>/crops/<pipeline>-<size>-<key>/{images.npy, manifest.json}`. The key hashes every
setting that can change a pixel (pipeline settings, library versions) and the image list itself, so
a changed setting never reuses old arrays. The manifest is written last and atomically: a folder
without one is an unfinished build and is never read. Source files' sizes and mtimes are checked on
every open, so an edited image rebuilds the cache instead of reusing a stale crop.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .dataset import Dataset
from .pipelines import PipelineSettings, crop

CACHE_FORMAT = 1
CHUNK = 32  # images per worker task


class CacheError(RuntimeError):
    pass


@dataclass
class CropCache:
    folder: Path
    images: np.ndarray  # read-only memory map, N x S x S x 3 uint8, labels-file order
    manifest: dict


def cache_key(dataset: Dataset, settings: PipelineSettings) -> str:
    identity = {
        "format": CACHE_FORMAT,
        "pipeline": settings.to_dict(),
        "versions": settings.versions(),
        "root": str(dataset.root),
        "files": dataset.names,
        "labels": dataset.labels,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def file_stats(dataset: Dataset) -> list[list[int]]:
    stats = []
    for i in range(len(dataset)):
        st = os.stat(dataset.path(i))
        stats.append([st.st_size, st.st_mtime_ns])
    return stats


@contextmanager
def _locked(path: Path):
    """Exclusive lock across processes: a second builder of the same cache waits, then reuses it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fill(array_path: str, paths: list[str], start: int, settings: PipelineSettings) -> int:
    import cv2

    cv2.setNumThreads(1)  # one OpenCV thread per worker process
    out = np.load(array_path, mmap_mode="r+")
    for i, p in enumerate(paths):
        out[start + i] = crop(p, settings)
    out.flush()
    return len(paths)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _build(folder: Path, dataset: Dataset, settings: PipelineSettings, key: str,
           workers: int, progress: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stats = file_stats(dataset)
    n, s = len(dataset), settings.image_size
    partial = folder / "images.npy.partial"
    np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(n, s, s, 3)).flush()
    paths = [str(dataset.path(i)) for i in range(n)]
    chunks = [(start, paths[start:start + CHUNK]) for start in range(0, n, CHUNK)]
    bar = tqdm(total=n, desc=f"preprocess {settings.name} {s}px", unit="img", disable=not progress,
               file=sys.stderr)
    try:
        with bar:
            if workers <= 1 or len(chunks) == 1:
                for start, chunk in chunks:
                    bar.update(_fill(str(partial), chunk, start, settings))
            else:
                with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                    futures = [pool.submit(_fill, str(partial), chunk, start, settings)
                               for start, chunk in chunks]
                    try:
                        for future in as_completed(futures):
                            bar.update(future.result())
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, folder / "images.npy")
    manifest = {
        "format": CACHE_FORMAT,
        "key": key,
        "pipeline": settings.to_dict(),
        "image_size": s,
        "count": n,
        "root": str(dataset.root),
        "labels_file": str(dataset.labels_file),
        "files": dataset.names,
        "labels": dataset.labels,
        "stats": stats,
        "versions": {**settings.versions(), "numpy": np.__version__, "python": platform.python_version()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, folder / "manifest.json")  # last, atomically: marks the cache complete


def _stale_reason(manifest: dict, dataset: Dataset) -> str | None:
    for i, (old, new) in enumerate(zip(manifest["stats"], file_stats(dataset))):
        if old != new:
            return f"{dataset.path(i)} changed since the cache was built"
    return None


def open_cache(dataset: Dataset, settings: PipelineSettings, cache_dir: Path,
               workers: int | None = None, progress: bool = True) -> CropCache:
    """The crop cache for `dataset` under `settings`, built (or rebuilt, when stale) if needed."""
    key = cache_key(dataset, settings)
    folder = Path(cache_dir) / "crops" / f"{settings.name}-{settings.image_size}-{key[:20]}"
    with _locked(folder.with_name(folder.name + ".lock")):
        manifest_path = folder / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            reason = _stale_reason(manifest, dataset) if manifest.get("key") == key else "key mismatch"
            if reason is None:
                return _open(folder, manifest)
            print(f"cache {folder} is stale ({reason}); rebuilding", file=sys.stderr)
            manifest_path.unlink()
        _build(folder, dataset, settings, key, workers or default_workers(), progress)
        return _open(folder, json.loads(manifest_path.read_text()))


def _open(folder: Path, manifest: dict) -> CropCache:
    images = np.load(folder / "images.npy", mmap_mode="r")
    s = manifest["image_size"]
    if images.shape != (manifest["count"], s, s, 3) or images.dtype != np.uint8:
        raise CacheError(f"{folder}/images.npy: shape {images.shape} {images.dtype} does not match its "
                         f"manifest ({manifest['count']} x {s} x {s} x 3 uint8); delete the folder")
    return CropCache(folder, images, manifest)
