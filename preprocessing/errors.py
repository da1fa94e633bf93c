"""Errors caused by the user's inputs, and the one way a command reports them: one line on stderr,
exit status 2, no traceback. Every kind of bad input has its own subclass (a dataset, an image, the
cache, a checkpoint, a graph, a log, a setting), so each names the file and the reason."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """An input the user can fix: reported as one line, never with a traceback."""


class ConfigError(UserError, ValueError):
    """A setting that cannot be used, or settings that contradict each other."""


def exit_on_user_error(command: Callable[[], T]) -> T:
    """Runs a command; an error in the user's inputs ends it with one line on stderr and status 2."""
    try:
        return command()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
