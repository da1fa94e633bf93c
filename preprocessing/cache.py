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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from preprocessing.dataset import Dataset
from preprocessing.errors import UserError
from preprocessing.files import write_text_atomically
from preprocessing.pipelines import ImageError, PipelineSettings, crop, decode_rgb, resize_and_crop

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


def _crops(data: bytes, path: Path, pipelines: list[PipelineSettings]) -> list:
    """Each pipeline's crop of one image (or the ImageError it raised): the image decoded once per
    decoder, every pipeline with that decoder resizing the same decoded image."""
    if not data:
        return [ImageError(f"{path}: empty file")] * len(pipelines)
    decoded: dict[str, object] = {}  # decoder -> the decoded image, or the error decoding it raised
    crops = []
    for settings in pipelines:
        try:
            if settings.resize == "tf":  # decodes and resizes in TensorFlow: nothing to share
                crops.append(crop(path, settings, data))
                continue
            if settings.decoder not in decoded:
                try:
                    decoded[settings.decoder] = decode_rgb(data, path, settings.decoder)
                except ImageError as e:
                    decoded[settings.decoder] = e
            img = decoded[settings.decoder]
            if isinstance(img, ImageError):
                raise img
            crops.append(resize_and_crop(img, settings))
        except ImageError as e:
            crops.append(e)
    return crops


def _fill(outs: list[RowWriter], dataset: Dataset, items: range, pipelines: list[PipelineSettings],
          skip: bool, digests: bool) -> list[tuple[int, str | None, list[str | None]]]:
    """Crops images `items` of `dataset` into `outs`, one per pipeline, each file read once (and hashed
    once, with `digests`); per image (index, source sha256 or None, each pipeline's failure or None)."""
    done = []
    for i in items:
        path = dataset.path(i)
        try:
            data = dataset.read(i)
        except ImageError as e:
            crops, digest = [e] * len(pipelines), None  # an unreadable file's, as Dataset.sha256 has it
        else:
            crops, digest = _crops(data, path, pipelines), hashlib.sha256(data).hexdigest() if digests else None
        failures = []
        for out, made in zip(outs, crops):
            if isinstance(made, ImageError):
                if not skip:
                    raise made
                out[i] = 0
                failures.append(str(made))
            else:
                out[i] = made
                failures.append(None)
        done.append((i, digest, failures))
    return done


def _fill_all(outs: list[RowWriter], dataset: Dataset, chunks: list[range], pipelines: list[PipelineSettings],
              skip: bool, digests: bool, workers: int, bar: tqdm) -> list:
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
        for done, future in enumerate(as_completed([pool.submit(_fill, outs, dataset, chunk, pipelines, skip, digests)
                                                    for chunk in chunks]), 1):
            results += future.result()
            bar.update(len(results) - bar.n)
            if done % WRITEBACK_EVERY == 0:
                for out in outs:
                    out.sync()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error: no new chunk starts
        cv2.setNumThreads(threads)
    return results


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _build(builds: list[tuple[Path, PipelineSettings, str]], dataset: Dataset, workers: int, progress: bool,
           skip: bool, digests: bool) -> None:
    """The caches of `builds` (folder, pipeline, key) in one pass over the images; with `digests`, each
    source file's sha256 recorded for verify=sha256 (a build's only hashing: 4 % of its time at 224)."""
    for folder, _, _ in builds:
        print(f"building preprocessing cache {folder}", file=sys.stderr)
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob("images.npy.partial*"):  # of killed builds (we hold the lock)
            leftover.unlink()
    stats = dataset.stats()
    n = len(dataset)
    partials = [folder / "images.npy.partial" for folder, _, _ in builds]
    pipelines = [settings for _, settings, _ in builds]
    outs: list[RowWriter] = []
    chunks = [range(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]
    names = ", ".join(f"{p.name} {p.image_size}px" for p in pipelines)
    bar = tqdm(total=n, desc=f"preprocess {names}", unit="img", disable=not progress, file=sys.stderr)
    complete = False
    try:
        for partial, settings in zip(partials, pipelines):
            s = settings.image_size
            outs.append(RowWriter(partial, settings.dtype, (n, s, s, 3)))
        with bar:
            results = _fill_all(outs, dataset, chunks, pipelines, skip, digests, workers, bar)
        complete = True
    finally:
        try:
            for out in outs:
                out.close(complete)
        finally:
            if not complete:
                for partial in partials:
                    partial.unlink(missing_ok=True)
    results.sort()
    for k, (folder, settings, key) in enumerate(builds):
        os.replace(partials[k], folder / "images.npy")
        manifest = {
            "format": CACHE_FORMAT,
            "key": key,
            "pipeline": settings.to_dict(),
            "image_size": settings.image_size,
            "dtype": np.dtype(settings.dtype).name,
            "count": n,
            "root": str(dataset.root),
            "layout": dataset.layout,
            "labels_file": str(dataset.labels_file) if dataset.labels_file else None,
            "files": dataset.names,
            "labels": dataset.labels,
            "stats": stats,
            "sha256": [digest for _, digest, _ in results] if digests else None,
            "failed": {str(i): failures[k] for i, _, failures in results if failures[k] is not None},
            "versions": {**settings.versions(), "numpy": np.__version__, "python": platform.python_version()},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_text_atomically(folder / "manifest.json", json.dumps(manifest))  # last: marks the cache complete


def _stale_reason(manifest: dict, dataset: Dataset, verify: str) -> str | None:
    if verify == "sha256":
        if manifest["sha256"] is None:
            return "it was built without its sources' digests (dataset.verify=stat); content cannot be checked"
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
    return open_caches(dataset, [settings], cache_dir, workers, progress, on_error, verify)[0]


def cache_folder(dataset: Dataset, settings: PipelineSettings, cache_dir: Path) -> tuple[Path, str]:
    key = cache_key(dataset, settings)
    return Path(cache_dir) / "crops" / f"{settings.name}-{settings.image_size}-{key[:20]}", key


def open_caches(dataset: Dataset, pipelines: list[PipelineSettings], cache_dir: Path, workers: int | None = None,
                progress: bool = True, on_error: str = "stop", verify: str = "stat") -> list[CropCache]:
    """The crop caches of `dataset` under each of `pipelines` (open_cache's, in order), those missing
    or stale built together in one pass: each file read once (hashed too, for verify=sha256) and
    decoded once per decoder (a sweep's pipelines mostly share OpenCV's), where building them one by
    one decodes every image once per pipeline. TensorFlow's pipelines (resize=tf) take a second pass of their own."""
    if on_error not in ON_ERROR or verify not in VERIFY:
        raise CacheError(f"on_error={on_error}, verify={verify}: expected one of {ON_ERROR} and {VERIFY}")
    folders = {}  # folder -> (settings, key): identical pipelines share one cache
    for settings in pipelines:
        folder, key = cache_folder(dataset, settings, cache_dir)
        folders.setdefault(folder, (settings, key))
    with ExitStack() as locks:
        for folder in sorted(folders):  # one order for every process: no two wait on each other
            locks.enter_context(_locked(folder.with_name(folder.name + ".lock")))
        builds = []
        for folder, (settings, key) in folders.items():
            reason = _reuse(folder, key, dataset, settings, verify)
            if reason is not None:
                builds.append((folder, settings, key))
        # TensorFlow's pipelines share no decode with the others, and run beside them slower than
        # apart (its graph's own threads against the pool's; measured on the sample sweep): a pass of their own
        for part in ([b for b in builds if b[1].resize != "tf"], [b for b in builds if b[1].resize == "tf"]):
            if part:
                _build(part, dataset, workers or default_workers(), progress, on_error == "skip", verify == "sha256")
        opened = {folder: _open(folder, json.loads((folder / "manifest.json").read_text()), dataset, on_error)
                  for folder in folders}
    return [opened[cache_folder(dataset, settings, cache_dir)[0]] for settings in pipelines]


def _reuse(folder: Path, key: str, dataset: Dataset, settings: PipelineSettings, verify: str) -> str | None:
    """None where the complete cache in `folder` can be used; otherwise why it is built (a stale
    one's manifest removed first)."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return "missing"
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
    if reason is not None:
        print(f"cache {folder} is stale ({reason}); rebuilding", file=sys.stderr)
        manifest_path.unlink()
    return reason


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
