"""Errors caused by the user's inputs: printed as one clear line, without a traceback."""

import sys
from typing import Callable

from preprocessing.cache import CacheError
from preprocessing.dataset import DatasetError
from preprocessing.pipelines import ImageError

from .checkpoint import CheckpointError
from .graph import GraphError
from .mlperf_log import LogError


class ConfigError(ValueError):
    """A setting that cannot be used, or settings that contradict each other."""


USER_ERRORS = (CheckpointError, GraphError, DatasetError, ImageError, CacheError, ConfigError, LogError)


def exit_on_user_error(command: Callable[[], object]) -> None:
    """Runs a command; an error in the user's inputs ends it with one line on stderr and status 2."""
    try:
        command()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
