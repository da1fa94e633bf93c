"""Cache stage: the crops of a whole labels list in one memory-mappable `images.npy` (uint8; float32
for pipelines without a uint8 intermediate).

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
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from preprocessing.dataset import Dataset
from preprocessing.errors import UserError
from preprocessing.files import write_text_atomically
from preprocessing.pipelines import ImageError, PipelineSettings, crop

CACHE_FORMAT = 3
CHUNK = 32  # images per worker task
WRITEBACK_EVERY = 4  # chunks between background writes of the built rows to the disk (RowWriter.sync)


class CacheError(UserError, RuntimeError):
    pass


@dataclass
class CropCache:
    folder: Path
    images: np.ndarray  # read-only memory map, N x S x S x 3 uint8, labels-file order
    manifest: dict
    failed: dict[int, str]  # index -> why the image could not be read (on_error=skip only)


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


@contextmanager
def _locked(path: Path):
    """Exclusive lock across processes: a second builder of the same cache waits, then reuses it.
    The kernel drops the lock when its holder dies, so a killed build never blocks the next one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class RowWriter:
    """The `.npy` being built, written one image's row at a time with `os.pwrite` into the page
    cache: the call releases the GIL and costs the process no page faults, where stores into a
    fresh memory map faulted every page in, with the GIL held (0.26 ms of 2.96 per image, one
    thread). What is written reaches the disk in the background while the build goes on (`sync`,
    every WRITEBACK_EVERY chunks) and is waited for once at the end (`close`): the final wait had
    been 15 % of a 1,000-image build. The pages are the page cache's, never the process's: a
    50,000-image build does not grow to the cache's size."""

    def __init__(self, path: Path, dtype, shape: tuple[int, ...]):
        header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)  # header, full size
        self.offset, self.dtype, self.row_shape = header.offset, np.dtype(dtype), tuple(shape[1:])
        del header
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self.fd = os.open(path, os.O_WRONLY)
        self.syncing = ThreadPoolExecutor(1, thread_name_prefix="writeback")
        self.pending = None

    def __setitem__(self, i: int, value) -> None:
        row = np.ascontiguousarray(np.broadcast_to(np.asarray(value, self.dtype), self.row_shape))
        if os.pwrite(self.fd, memoryview(row).cast("B"), self.offset + i * self.row_bytes) != self.row_bytes:
            raise OSError(f"short write of image {i}")

    def sync(self) -> None:
        """Start writing what is written so far to the disk, unless the last such write is still running."""
        if self.pending is None or self.pending.done():
            self.pending = self.syncing.submit(os.fdatasync, self.fd)

    def close(self, complete: bool) -> None:
        """`complete`: on disk before the manifest marks it complete (safe from a crash, not just a kill)."""
        try:
            self.syncing.shutdown(wait=True)
            if complete:
                if self.pending is not None:
                    self.pending.result()
                os.fdatasync(self.fd)
        finally:
            os.close(self.fd)


def _fill(out: RowWriter, dataset: Dataset, items: range, settings: PipelineSettings,
          skip: bool) -> list[tuple[int, str | None, str | None]]:
    """Crops images `items` of `dataset` into `out`; per image (index, source sha256, failure or None)."""
    done = []
    for i in items:
        digest = None  # an unreadable file's, as Dataset.sha256 has it
        try:
            data = dataset.read(i)
            digest = hashlib.sha256(data).hexdigest()
            out[i] = crop(dataset.path(i), settings, data)
            done.append((i, digest, None))
        except ImageError as e:
            if not skip:
                raise
            out[i] = 0
            done.append((i, digest, str(e)))
    return done


def _fill_all(out: RowWriter, dataset: Dataset, chunks: list[range], settings: PipelineSettings, skip: bool,
              workers: int, bar: tqdm) -> list:
    """Every chunk cropped by `workers` threads, each running one OpenCV thread.

    Threads, not processes: decoding, resizing, hashing and writing run in OpenCV, Pillow, torch,
    TF, hashlib and the kernel with the GIL released, so threads use every core as processes would,
    without starting interpreters and importing the libraries again (0.3 s per process for OpenCV,
    seconds for torch or TF)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # process-wide: parallelism comes from the workers, one image each
    pool = ThreadPoolExecutor(workers, thread_name_prefix="preprocess")
    results = []
    try:
        for done, future in enumerate(as_completed([pool.submit(_fill, out, dataset, chunk, settings, skip)
                                                    for chunk in chunks]), 1):
            results += future.result()
            bar.update(len(results) - bar.n)
            if done % WRITEBACK_EVERY == 0:
                out.sync()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error: no new chunk starts
        cv2.setNumThreads(threads)
    return results


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _build(folder: Path, dataset: Dataset, settings: PipelineSettings, key: str,
           workers: int, progress: bool, skip: bool) -> None:
    print(f"building preprocessing cache {folder}", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    stats = dataset.stats()
    n, s = len(dataset), settings.image_size
    for leftover in folder.glob("images.npy.partial*"):  # of killed builds (we hold the lock)
        leftover.unlink()
    partial = folder / "images.npy.partial"
    out = RowWriter(partial, settings.dtype, (n, s, s, 3))
    chunks = [range(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]
    bar = tqdm(total=n, desc=f"preprocess {settings.name} {s}px", unit="img", disable=not progress,
               file=sys.stderr)
    try:
        with bar:
            results = _fill_all(out, dataset, chunks, settings, skip, workers, bar)
    except BaseException:
        out.close(complete=False)
        partial.unlink(missing_ok=True)
        raise
    try:
        out.close(complete=True)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    results.sort()
    os.replace(partial, folder / "images.npy")
    manifest = {
        "format": CACHE_FORMAT,
        "key": key,
        "pipeline": settings.to_dict(),
        "image_size": s,
        "dtype": np.dtype(settings.dtype).name,
        "count": n,
        "root": str(dataset.root),
        "layout": dataset.layout,
        "labels_file": str(dataset.labels_file) if dataset.labels_file else None,
        "files": dataset.names,
        "labels": dataset.labels,
        "stats": stats,
        "sha256": [digest for _, digest, _ in results],
        "failed": {str(i): reason for i, _, reason in results if reason is not None},
        "versions": {**settings.versions(), "numpy": np.__version__, "python": platform.python_version()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomically(folder / "manifest.json", json.dumps(manifest))  # last: marks the cache complete


def _stale_reason(manifest: dict, dataset: Dataset, verify: str) -> str | None:
    if verify == "sha256":
        current = [dataset.sha256(i) for i in range(len(dataset))]
        recorded, what = manifest["sha256"], "content"
    else:
        current, recorded, what = dataset.stats(), manifest["stats"], "size or mtime"
    for i, (old, new) in enumerate(zip(recorded, current)):
        if old != new:
            return f"{what} of {dataset.path(i)} changed since the cache was built"
    return None


def _readable_again(manifest: dict, dataset: Dataset, settings: PipelineSettings) -> str | None:
    """An image that could not be read when the cache was built (dataset.on_error=skip) but reads
    now: a permission fixed or a transient I/O error changes neither its size nor its mtime, so the
    failed ones are tried again on every open (they are few; a read and a crop each)."""
    for i in sorted(int(k) for k in manifest["failed"]):
        try:
            crop(dataset.path(i), settings, dataset.read(i))
        except ImageError:
            continue
        return f"{dataset.path(i)} could not be read when the cache was built but reads now"
    return None


VERIFY = ("stat", "sha256")
ON_ERROR = ("stop", "skip")


def open_cache(dataset: Dataset, settings: PipelineSettings, cache_dir: Path, workers: int | None = None,
               progress: bool = True, on_error: str = "stop", verify: str = "stat") -> CropCache:
    """The crop cache for `dataset` under `settings`, built (or rebuilt, when stale) if needed.

    on_error: `stop` raises on the first image that cannot be read; `skip` zero-fills its slot and
    records it in the manifest's `failed` (index -> reason), for the evaluator to leave out.
    verify: how a cache's sources are checked on open: `stat` (size and mtime) or `sha256` (content).
    """
    if on_error not in ON_ERROR or verify not in VERIFY:
        raise CacheError(f"on_error={on_error}, verify={verify}: expected one of {ON_ERROR} and {VERIFY}")
    key = cache_key(dataset, settings)
    folder = Path(cache_dir) / "crops" / f"{settings.name}-{settings.image_size}-{key[:20]}"
    with _locked(folder.with_name(folder.name + ".lock")):
        manifest_path = folder / "manifest.json"
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text())
            except ValueError:  # cut short by a crash before it reached the disk
                manifest = None
            if manifest is None:
                reason = "its manifest is unreadable"
            elif manifest.get("key") != key:
                reason = "key mismatch"
            else:
                reason = _stale_reason(manifest, dataset, verify) or _readable_again(manifest, dataset, settings)
            if reason is None:
                return _open(folder, manifest, dataset, on_error)
            print(f"cache {folder} is stale ({reason}); rebuilding", file=sys.stderr)
            manifest_path.unlink()
        _build(folder, dataset, settings, key, workers or default_workers(), progress, on_error == "skip")
        return _open(folder, json.loads(manifest_path.read_text()), dataset, on_error)


def _open(folder: Path, manifest: dict, dataset: Dataset, on_error: str) -> CropCache:
    images = np.load(folder / "images.npy", mmap_mode="r")
    s = manifest["image_size"]
    dtype = np.dtype(manifest["dtype"])
    if images.shape != (manifest["count"], s, s, 3) or images.dtype != dtype:
        raise CacheError(f"{folder}/images.npy: shape {images.shape} {images.dtype} does not match its "
                         f"manifest ({manifest['count']} x {s} x {s} x 3 {dtype}); delete the folder")
    failed = {int(i): reason for i, reason in manifest["failed"].items()}
    if failed and on_error == "stop":  # a cache built with on_error=skip, opened without it
        first = min(failed)
        raise ImageError(f"{failed[first]} ({len(failed)} unreadable image(s) in total; "
                         f"dataset.on_error=skip leaves them out)")
    return CropCache(folder, images, manifest, failed)
