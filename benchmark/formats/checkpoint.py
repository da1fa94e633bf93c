"""Checkpoint stage: find the frozen graph in a `.pb` or `.tgz` (or take an `.onnx`) and fingerprint it.

MLPerf and TF-slim ship MobileNet-v1 as a `.tgz` holding checkpoint files, a TFLite model and the
frozen graph; ResNet-50 as a bare `.pb`. Archive members are read in memory, never extracted, so a
member path cannot escape anywhere.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path

from preprocessing.errors import UserError


# A user's module's weights (model=module): tensors only, read without running any code
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be used, with the file and the reason in the message."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    sha256: str  # of the file the user named (archive or graph)
    member: str | None  # archive member holding the frozen graph, None for a bare .pb
    graph_bytes: bytes

    @property
    def source(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @property
    def is_onnx(self) -> bool:
        """An ONNX model (MLPerf publishes both models as ONNX too) rather than a TF frozen graph."""
        return self.path.suffix == ".onnx"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _check_member_paths(names: list[str], path: Path) -> None:
    """Members are only read, never extracted; an archive whose paths would escape its folder is
    refused all the same, as a corrupt or hostile download."""
    for name in names:
        parts = Path(name).parts
        if name.startswith("/") or ".." in parts:
            raise CheckpointError(f"{path}: archive member '{name}' escapes the archive's folder: refused")


def _pick_graph_member(names: list[str], path: Path) -> str:
    """The frozen float graph among an archive's `.pb` members (quantized graphs are lossy: skipped)."""
    pbs = [n for n in names if n.endswith(".pb")]
    floats = [n for n in pbs if "quantized" not in Path(n).name]
    if len(floats) > 1:
        floats = [n for n in floats if "frozen" in Path(n).name]
    if len(floats) != 1:
        found = ", ".join(names) or "nothing"
        raise CheckpointError(
            f"{path}: expected exactly one frozen graph (.pb) in the archive, found {len(floats)} "
            f"candidates; members: {found}"
        )
    return floats[0]


def open_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    digest = file_digest(path)
    if path.name.endswith((".tgz", ".tar.gz", ".tar")):
        try:
            with tarfile.open(path) as tar:
                members = tar.getmembers()
                links = [m.linkname for m in members if m.issym() or m.islnk()]
                _check_member_paths([m.name for m in members] + links, path)
                files = {m.name: m for m in members if m.isfile()}
                member = _pick_graph_member(sorted(files), path)
                graph_bytes = tar.extractfile(files[member]).read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise CheckpointError(f"{path}: not a readable tar archive ({e})") from e
        return Checkpoint(path, digest, member, graph_bytes)
    return Checkpoint(path, digest, None, path.read_bytes())
