"""Files written whole or not at all: through a temporary file beside the target, renamed over it
once complete, so a reader (another process, a later run) never takes a partial file for a whole
one. The file gets the mode the umask gives any new file (temporary files are often made 0600,
which would keep a shared cache or an exported model from the rest of a team)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable


def _umask() -> int:
    try:  # Linux reports it without changing it
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` writes the file's content to `tmp`; it becomes `path` only once complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text))
