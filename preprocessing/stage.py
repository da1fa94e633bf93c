"""The preprocessing stage from a run's config: the dataset, the pipeline's settings for the model's
input size, and the crop cache (built once, then verified and reused)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from preprocessing.cache import CropCache, open_cache
from preprocessing.dataset import Dataset, load_dataset
from preprocessing.errors import ConfigError
from preprocessing.pipelines import PipelineSettings, make_settings


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imagenet-mlperf-harness"


def cache_dir(cfg: DictConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()


def require(cfg: DictConfig, key: str, hint: str = ""):
    if OmegaConf.is_missing(cfg, key) or OmegaConf.select(cfg, key) is None:
        raise ConfigError(f"{key} is not set{hint}")
    return OmegaConf.select(cfg, key)


@dataclass
class Inputs:
    """What the cache is built from: the model's input size, the images and labels, the pipeline."""
    image_size: int
    dataset: Dataset
    settings: PipelineSettings


@dataclass(frozen=True)
class DatasetSpec:
    """dataset.*, resolved once by the command (`from_config`): where the images are and how to list them."""
    root: str
    labels: str | None = None
    limit: int | None = None
    on_error: str = "stop"
    layout: str = "auto"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "DatasetSpec":
        d = cfg.dataset
        return cls(str(require(cfg, "dataset.root")), d.labels, d.limit, str(d.on_error), str(d.layout))

    def listed(self, whole: bool = False) -> Dataset:
        """Its images and labels listed, none read (`whole`: all of them, not `limit`'s part)."""
        return load_dataset(self.root, self.labels, None if whole else self.limit,
                            allow_missing=self.on_error == "skip", layout=self.layout)


@dataclass(frozen=True)
class PipelineSpec:
    """preprocess.*, resolved once by the command: the pipeline, for any input size (`settings`)."""
    name: str
    interpolation: str
    crop_percent: float = 87.5
    decoder: str = "opencv"
    resize: str = "opencv"
    antialias: bool = True
    crop_rounding: str = "floor"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "PipelineSpec":
        p = cfg.preprocess
        return cls(str(p.name), str(p.interpolation), float(p.crop_percent), str(p.decoder), str(p.resize),
                   bool(p.antialias), str(p.crop_rounding))

    def settings(self, image_size: int) -> PipelineSettings:
        try:
            return make_settings(self.name, image_size, self.interpolation, self.crop_percent, self.decoder,
                                 self.resize, self.antialias, self.crop_rounding)
        except ValueError as e:
            raise ConfigError(str(e)) from e


@dataclass(frozen=True)
class CacheSpec:
    """Where and how crop caches are built: the folder, worker threads, progress bars, what an
    unreadable image does, and how a built cache is verified (cache_dir, workers, progress, dataset.*)."""
    folder: Path
    workers: int | None = None
    progress: bool = True
    on_error: str = "stop"
    verify: str | bool = "stat"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "CacheSpec":
        return cls(cache_dir(cfg), cfg.workers, bool(cfg.progress), str(cfg.dataset.on_error), cfg.dataset.verify)


def prepare(dataset: Dataset, pipeline: PipelineSpec, image_size: int) -> Inputs:
    """The listed `dataset` and the pipeline's settings for `image_size`."""
    return Inputs(image_size, dataset, pipeline.settings(image_size))


def build_cache(spec: CacheSpec, inputs: Inputs) -> CropCache:
    return open_cache(inputs.dataset, inputs.settings, spec.folder, spec.workers, spec.progress, spec.on_error,
                      spec.verify)
