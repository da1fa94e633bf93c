"""Preprocessing pipelines: image file to the crop a model is fed (before its normalisation).

The `opencv` path with floor crop offsets is MLPerf inference's reference pipeline
(`pre_process_mobilenet` / `pre_process_vgg`), bit for bit: cv2.imread (as cv2.imdecode of the
file's bytes, read once), BGR to RGB (by the decoder), aspect-preserving resize of the short side
to int(100 * S / 87.5), centre crop. The knobs swap the decoder (OpenCV, Pillow), the resize (OpenCV,
Pillow, torchvision on tensors with or without antialias), the interpolation, the crop fraction and
the crop offset rounding; `decoder=pil resize=pil crop_rounding=round` is torchvision's eval
pipeline, bit for bit. `resize=tf` is TF official ResNet's eval preprocessing (tf.image decode,
bilinear resize, central crop), which has no uint8 intermediate: its crops are float32.
"""

from __future__ import annotations

import functools
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from preprocessing.errors import UserError
from preprocessing.tf_import import import_tensorflow

INTERPOLATIONS = ("nearest", "linear", "area", "cubic", "lanczos")
CV2_INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA,
                     "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
DECODERS = ("opencv", "pil", "tf")
RESIZERS = ("opencv", "pil", "torchvision", "tf")


class ImageError(UserError, ValueError):
    """An image that cannot be decoded; the message names the file."""


@dataclass(frozen=True)
class PipelineSettings:
    """Every setting that can change a pixel of the crop."""
    name: str  # the label of the preprocess config (mlperf, torchvision, tf, ...)
    image_size: int
    interpolation: str
    crop_percent: float = 87.5  # the short side is resized to int(100 * S / crop_percent)
    decoder: str = "opencv"
    resize: str = "opencv"
    antialias: bool = True  # resize=torchvision only
    crop_rounding: str = "floor"  # centre-crop offsets: floor (MLPerf) or round (torchvision)

    @property
    def dtype(self):
        return np.float32 if self.resize == "tf" else np.uint8

    def to_dict(self) -> dict:
        return asdict(self)

    def versions(self) -> dict:
        """Versions of the libraries that make the pixels (part of the cache key). torchvision's
        resize runs in torch's kernels, so torch's version counts too."""
        versions = {"opencv": cv2.__version__}
        if "pil" in (self.decoder, self.resize):
            versions["pillow"] = library_version("PIL")
        if self.resize == "torchvision":
            versions["torchvision"] = library_version("torchvision")
            versions["torch"] = library_version("torch")
        if self.resize == "tf":
            versions["tensorflow"] = library_version("tensorflow")
        return versions


@functools.cache
def distribution_providers() -> dict[str, list[str]]:
    """Importable top-level module -> the installed distributions providing it (read once)."""
    from importlib.metadata import packages_distributions

    return packages_distributions()


def library_version(module: str) -> str:
    """The version of whichever distribution provides the importable `module` (Pillow or
    Pillow-SIMD for PIL; tensorflow, tensorflow-cpu, tensorflow-intel or tf-nightly for tensorflow),
    read without importing it; the module's own __version__ where no distribution claims it."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in distribution_providers().get(module, []):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    import importlib

    return str(importlib.import_module(module).__version__)


def resized_size(height: int, width: int, size: int, crop_percent: float) -> tuple[int, int]:
    """MLPerf's (and torchvision's) aspect-preserving size: short side int(100 * S / crop_percent)."""
    short = int(100.0 * size / crop_percent)
    if height > width:
        return int(short * height / width), short
    return short, int(short * width / height)


def center_crop(img: np.ndarray, size: int, rounding: str = "floor") -> np.ndarray:
    height, width = img.shape[:2]
    if rounding == "floor":
        left, top = int((width - size) / 2), int((height - size) / 2)
    else:
        left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return img[top:top + size, left:left + size]


def read_file(path) -> bytes:
    """The file's bytes, read once: the cache hashes the very bytes that are decoded."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as e:
        raise ImageError(f"{path}: file not found") from e
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from e


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def _has_jpeg_end(data: bytes) -> bool:
    return data[-64:].rstrip(b"\0\r\n ").endswith(JPEG_END)  # trailing padding after it is legal


def check_complete_jpeg(data: bytes, path) -> None:
    """cv2.imread decodes a truncated JPEG without an error (grey below the cut), so a file cut short
    would be scored as an image. A JPEG must end with its end-of-image marker; files that do not
    (trailing bytes after it are legal) are decoded fully by Pillow, which does notice truncation."""
    if data[:2] != JPEG_START or _has_jpeg_end(data):
        return  # complete, or not a JPEG (PNG content named .JPEG happens; OpenCV reads it)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: truncated or corrupt JPEG ({e}); OpenCV would decode it partially") from e


def decode_opencv(data: bytes, path) -> np.ndarray:
    """cv2.imread's decoding then BGR to RGB, as MLPerf reads images, with its silent failures made loud."""
    # cv2.imdecode is cv2.imread on bytes already read: the same decoder and EXIF rotation; unlike
    # imread it refuses a truncated JPEG instead of decoding the part that is there. IMREAD_COLOR_RGB
    # has the decoder write RGB: imread's BGR with the channels swapped, without a pass over the image.
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)  # grayscale and CMYK become RGB
    if img is None:
        if data[:2] == JPEG_START and not _has_jpeg_end(data):
            raise ImageError(f"{path}: truncated or corrupt JPEG (no end-of-image marker); OpenCV cannot decode it")
        raise ImageError(f"{path}: OpenCV cannot decode this file as an image")
    check_complete_jpeg(data, path)
    return img


def decode_rgb(data: bytes, path, decoder: str) -> np.ndarray:
    """H x W x 3 uint8 RGB."""
    if decoder == "opencv":
        return decode_opencv(data, path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:  # no EXIF rotation, unlike cv2.imread
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: Pillow cannot decode this file ({e})") from e


def _resize_pil(img: np.ndarray, h: int, w: int, interpolation: str, antialias: bool) -> np.ndarray:
    from PIL import Image

    filters = {"nearest": Image.Resampling.NEAREST, "linear": Image.Resampling.BILINEAR,
               "area": Image.Resampling.BOX, "cubic": Image.Resampling.BICUBIC,
               "lanczos": Image.Resampling.LANCZOS}
    return np.asarray(Image.fromarray(img).resize((w, h), filters[interpolation]))


def _resize_torchvision(img: np.ndarray, h: int, w: int, interpolation: str, antialias: bool) -> np.ndarray:
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    modes = {"nearest": InterpolationMode.NEAREST, "linear": InterpolationMode.BILINEAR,
             "cubic": InterpolationMode.BICUBIC}
    if interpolation not in modes:
        raise ValueError(f"resize=torchvision supports interpolation {', '.join(modes)}, not {interpolation}")
    tensor = torch.from_numpy(np.require(img, requirements="CW")).permute(2, 0, 1)  # Pillow's arrays are read-only
    return F.resize(tensor, [h, w], interpolation=modes[interpolation], antialias=antialias).permute(1, 2, 0).numpy()


def _resize_opencv(img: np.ndarray, h: int, w: int, interpolation: str, antialias: bool) -> np.ndarray:
    return cv2.resize(img, (w, h), interpolation=CV2_INTERPOLATION[interpolation])


RESIZE = {"opencv": _resize_opencv, "pil": _resize_pil, "torchvision": _resize_torchvision}


def tf_crop(data: bytes, path, settings: PipelineSettings) -> np.ndarray:
    """TF official ResNet's eval preprocessing: decode, bilinear resize of the short side to
    int(100 * S / crop_percent) with float32 scale arithmetic, central crop; float32 throughout."""
    tf = import_tensorflow()

    try:
        img = _tf_crop_function(settings.image_size, settings.crop_percent)(tf.constant(data))
    except (tf.errors.InvalidArgumentError, tf.errors.OpError) as e:
        raise ImageError(f"{path}: TensorFlow cannot decode this file ({e.message})") from e
    return np.ascontiguousarray(img.numpy(), dtype=np.float32)


@functools.lru_cache(maxsize=None)
def _tf_crop_function(size: int, crop_percent: float):
    """tf_crop's ops as one TF graph, traced once per size: the same kernels as running them one by
    one (bit-identical on the 1,000 sample images, tests/preprocessing/test_pipelines.py) at half
    the time, and it runs without the GIL, so the cache build's threads run it in parallel."""
    tf = import_tensorflow()
    side = int(100.0 * size / crop_percent)

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def tf_crop_graph(data):
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        height, width = (tf.cast(d, tf.float32) for d in tf.unstack(tf.shape(img)[:2]))
        scale = tf.constant(side, tf.float32) / tf.minimum(height, width)
        new_h, new_w = tf.cast(height * scale, tf.int32), tf.cast(width * scale, tf.int32)
        img = tf.compat.v1.image.resize(img, [new_h, new_w], method=tf.image.ResizeMethod.BILINEAR,
                                        align_corners=False)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return img[top:top + size, left:left + size]

    return tf_crop_graph


def crop(path, settings: PipelineSettings, data: bytes | None = None) -> np.ndarray:
    """The S x S x 3 RGB crop of `settings` (uint8, or float32 for resize=tf) of the image file at
    `path`; `data`: its bytes, when the caller has read them already."""
    data = read_file(path) if data is None else data
    if not data:
        raise ImageError(f"{path}: empty file")
    if settings.resize == "tf":
        return tf_crop(data, path, settings)
    return resize_and_crop(decode_rgb(data, path, settings.decoder), settings)


def resize_and_crop(img: np.ndarray, settings: PipelineSettings) -> np.ndarray:
    """The crop of `settings` from an image decoded by its decoder (not resize=tf, which decodes and
    resizes in TensorFlow): pipelines with one decoder can share one decode of each image."""
    h, w = resized_size(img.shape[0], img.shape[1], settings.image_size, settings.crop_percent)
    img = RESIZE[settings.resize](img, h, w, settings.interpolation, settings.antialias)
    return np.ascontiguousarray(center_crop(img, settings.image_size, settings.crop_rounding))


# MLPerf's reference pipeline (pre_process_vgg / pre_process_mobilenet): every setting that changes a
# pixel, but the interpolation, which is the model's (its family record: mlperf_interpolation)
MLPERF_PIPELINE = {"decoder": "opencv", "resize": "opencv", "crop_percent": 87.5, "crop_rounding": "floor"}


def mlperf_departures(settings: "PipelineSettings | dict", interpolation: str) -> list[str]:
    """Where a pipeline departs from MLPerf's for a model MLPerf resizes with `interpolation`: each
    setting that differs, as 'key=value (MLPerf's: value)'; [] for MLPerf's pipeline, whatever its
    config is called (a results file's preprocess dict too; a key it lacks has the default)."""
    given = settings.to_dict() if isinstance(settings, PipelineSettings) else dict(settings)
    defaults = PipelineSettings("", 0, interpolation).to_dict()
    out = []
    for key, expected in {**MLPERF_PIPELINE, "interpolation": interpolation}.items():
        value = given.get(key, defaults[key])
        if value != expected:
            out.append(f"{key}={value:g} (MLPerf's: {expected:g})" if isinstance(value, float)
                       else f"{key}={value} (MLPerf's: {expected})")
    return out


def make_settings(name: str, image_size: int, interpolation: str, crop_percent: float = 87.5,
                  decoder: str = "opencv", resize: str = "opencv", antialias: bool = True,
                  crop_rounding: str = "floor") -> PipelineSettings:
    choices = {"interpolation": (interpolation, INTERPOLATIONS), "decoder": (decoder, DECODERS),
               "resize": (resize, RESIZERS), "crop_rounding": (crop_rounding, ("floor", "round"))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"preprocess.{key}={value}: expected one of {', '.join(allowed)}")
    if (decoder == "tf") != (resize == "tf"):
        raise ValueError("decoder=tf and resize=tf go together: TF official ResNet's preprocessing")
    if resize == "tf" and (interpolation != "linear" or crop_rounding != "floor"):
        raise ValueError("resize=tf is bilinear with floor offsets, as TF official ResNet's preprocessing")
    if not 0 < crop_percent <= 100:
        raise ValueError(f"preprocess.crop_percent={crop_percent}: expected 0 < crop_percent <= 100")
    return PipelineSettings(name, int(image_size), interpolation, float(crop_percent), decoder, resize,
                            bool(antialias), crop_rounding)
