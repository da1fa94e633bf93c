"""Preprocessing pipelines: image file to the uint8 RGB crop a model is fed (before normalisation).

`mlperf` is MLPerf inference's reference OpenCV pipeline (`pre_process_mobilenet` /
`pre_process_vgg`), bit for bit: cv2.imread, BGR to RGB, aspect-preserving resize of the short side
to int(100 * S / 87.5), centre crop with floor offsets.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import cv2
import numpy as np

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}


class ImageError(ValueError):
    """An image that cannot be decoded; the message names the file."""


@dataclass(frozen=True)
class PipelineSettings:
    """Every setting that can change a pixel of the crop."""
    name: str
    image_size: int
    interpolation: str
    crop_percent: float = 87.5  # MLPerf's `scale`: resize short side to int(100 * S / crop_percent)

    def to_dict(self) -> dict:
        return asdict(self)

    def versions(self) -> dict:
        return {"opencv": cv2.__version__}


def resize_with_aspect_ratio(img: np.ndarray, size: int, crop_percent: float, interpolation: int) -> np.ndarray:
    height, width = img.shape[:2]
    short = int(100.0 * size / crop_percent)
    if height > width:
        w, h = short, int(short * height / width)
    else:
        h, w = short, int(short * width / height)
    return cv2.resize(img, (w, h), interpolation=interpolation)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    height, width = img.shape[:2]
    left, top = int((width - size) / 2), int((height - size) / 2)
    return img[top:top + size, left:left + size]


def check_complete_jpeg(path) -> None:
    """OpenCV decodes a truncated JPEG without an error (grey below the cut), so a file cut short
    would be scored as an image. A JPEG must end with its end-of-image marker; files that do not
    (trailing bytes after it are legal) are decoded fully by Pillow, which does notice truncation."""
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return  # not a JPEG (PNG content named .JPEG happens; OpenCV reads it)
        f.seek(max(os.fstat(f.fileno()).st_size - 64, 0))
        if f.read().rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
            return
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, SyntaxError) as e:
        raise ImageError(f"{path}: truncated or corrupt JPEG ({e}); OpenCV would decode it partially") from e


def read_bgr(path) -> np.ndarray:
    """cv2.imread, as MLPerf reads images, with its silent failures made loud."""
    if not os.path.isfile(path):
        raise ImageError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file")
    img = cv2.imread(str(path))  # 3-channel BGR; grayscale and CMYK converted, EXIF rotation applied
    if img is None:
        raise ImageError(f"{path}: OpenCV cannot decode this file as an image")
    check_complete_jpeg(path)
    return img


def mlperf_crop(path: str, settings: PipelineSettings) -> np.ndarray:
    """The S x S x 3 uint8 RGB crop of MLPerf's reference pipeline."""
    img = cv2.cvtColor(read_bgr(path), cv2.COLOR_BGR2RGB)
    img = resize_with_aspect_ratio(img, settings.image_size, settings.crop_percent,
                                   INTERPOLATIONS[settings.interpolation])
    return np.ascontiguousarray(center_crop(img, settings.image_size))


PIPELINES = {"mlperf": mlperf_crop}


def make_settings(name: str, image_size: int, interpolation: str, crop_percent: float = 87.5) -> PipelineSettings:
    if name not in PIPELINES:
        raise ValueError(f"unknown preprocessing pipeline '{name}'; known: {', '.join(PIPELINES)}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation '{interpolation}'; known: {', '.join(INTERPOLATIONS)}")
    return PipelineSettings(name, int(image_size), interpolation, float(crop_percent))


def crop(path, settings: PipelineSettings) -> np.ndarray:
    return PIPELINES[settings.name](path, settings)
