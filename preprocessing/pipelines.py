"""Preprocessing pipelines: image file to the uint8 RGB crop a model is fed (before normalisation).

`mlperf` is MLPerf inference's reference OpenCV pipeline (`pre_process_mobilenet` /
`pre_process_vgg`), bit for bit: cv2.imread, BGR to RGB, aspect-preserving resize of the short side
to int(100 * S / 87.5), centre crop with floor offsets.
"""

from __future__ import annotations

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


def mlperf_crop(path: str, settings: PipelineSettings) -> np.ndarray:
    """The S x S x 3 uint8 RGB crop of MLPerf's reference pipeline."""
    img = cv2.imread(str(path))  # always 3-channel BGR: grayscale and CMYK files are converted
    if img is None:
        raise ImageError(f"{path}: OpenCV cannot decode this file as an image")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
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
