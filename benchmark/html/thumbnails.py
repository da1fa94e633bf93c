"""Thumbnails for the report: the crop a model saw, read back from the run's crop cache, and the
original file it was cut from, scaled down. Either may be gone (a cache deleted, a dataset moved):
then the reason, for the page to say, instead of a failure."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from benchmark.evaluation.results import Results
from preprocessing.dataset import Folder, TarArchive

CROP_QUALITY = 85  # JPEG: a thumbnail, not the crop's exact pixels (those stay in the cache)
ORIGINAL_SIDE = 320  # the original's longer side on the page, in pixels
ORIGINAL_QUALITY = 75


class Crops:
    """The crops of one run, from the cache its results name; `missing` says why they cannot be
    shown (None when they can)."""

    def __init__(self, results: Results):
        cache = results.facts.preprocess.get("cache")
        self.folder = Path(cache or "")
        self.names = results.images or []
        self.images, self.missing = None, None
        manifest = self.folder / "manifest.json"
        if not cache:
            self.missing = "the results name no crop cache"
        elif not manifest.is_file() or not (self.folder / "images.npy").is_file():
            self.missing = f"its crop cache {self.folder} is gone (run it again to rebuild it)"
        else:
            recorded = json.loads(manifest.read_text())
            if recorded.get("files") != self.names:
                self.missing = f"its crop cache {self.folder} holds other images than the run read"
            else:
                self.images = np.load(self.folder / "images.npy", mmap_mode="r")

    def write(self, i: int, path: Path) -> None:
        crop = np.asarray(self.images[i])
        if crop.dtype != np.uint8:  # resize=tf's float32 crops, 0..255
            crop = np.clip(np.rint(crop), 0, 255).astype(np.uint8)
        Image.fromarray(crop).save(path, quality=CROP_QUALITY)


def original_source(results: Results):
    """The dataset the run read (a folder or a tar archive), or the reason it cannot be read now."""
    root = Path((results.facts.dataset or {}).get("root") or "")
    if not root.exists() or not str(root):
        return None, f"the dataset {root} is not here"
    return (TarArchive(root) if root.is_file() else Folder(root)), None


def original_name(results: Results, name: str) -> str:
    """A file name for image `name` of the run's dataset: the same image in two runs, one file."""
    root = (results.facts.dataset or {}).get("root") or ""
    return "original-" + hashlib.sha256(f"{root}\0{name}".encode()).hexdigest()[:16] + ".jpg"


def write_original(source, name: str, path: Path) -> str | None:
    """The original image, its EXIF orientation applied, scaled to ORIGINAL_SIDE at most; the
    reason when it cannot be read."""
    try:
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(source.read(name))))
        image.thumbnail((ORIGINAL_SIDE, ORIGINAL_SIDE))
        image.convert("RGB").save(path, quality=ORIGINAL_QUALITY)
    except (OSError, ValueError) as e:  # unreadable (PIL's errors are OSErrors): the page says so
        return f"{name}: {e}"
    return None
