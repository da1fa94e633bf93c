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


def listed(cfg: DictConfig) -> Dataset:
    """The dataset (dataset.*): its images and labels listed, none read. Commands list it before they
    open a checkpoint, so a wrong dataset.root is said before a download starts."""
    return load_dataset(require(cfg, "dataset.root"), cfg.dataset.labels, cfg.dataset.limit,
                        allow_missing=cfg.dataset.on_error == "skip", layout=cfg.dataset.layout)


def prepare(cfg: DictConfig, image_size: int, dataset: Dataset | None = None) -> Inputs:
    """The dataset (dataset.*; `dataset`: already listed) and preprocessing settings (preprocess.*)
    for `image_size`."""
    dataset = dataset if dataset is not None else listed(cfg)
    pre = cfg.preprocess
    try:
        settings = make_settings(pre.name, image_size, pre.interpolation, pre.crop_percent, pre.decoder,
                                 pre.resize, pre.antialias, pre.crop_rounding)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return Inputs(image_size, dataset, settings)


def build_cache(cfg: DictConfig, inputs: Inputs) -> CropCache:
    return open_cache(inputs.dataset, inputs.settings, cache_dir(cfg), cfg.workers, cfg.progress,
                      cfg.dataset.on_error, cfg.dataset.verify)
