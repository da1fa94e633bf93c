"""Errors caused by the user's inputs: printed as one clear line, without a traceback."""

from preprocessing.cache import CacheError
from preprocessing.dataset import DatasetError
from preprocessing.pipelines import ImageError

from .checkpoint import CheckpointError
from .graph import GraphError
from .mlperf_log import LogError


class ConfigError(ValueError):
    """A setting that cannot be used, or settings that contradict each other."""


USER_ERRORS = (CheckpointError, GraphError, DatasetError, ImageError, CacheError, ConfigError, LogError)
