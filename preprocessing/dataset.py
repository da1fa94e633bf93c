"""The labelled image list: an MLPerf `val_map.txt` (`<file> <label>` per line) over a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NUM_CLASSES = 1000


class DatasetError(ValueError):
    """A labels file or image folder that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Dataset:
    root: Path
    labels_file: Path
    names: list[str]  # relative to root, in labels-file order
    labels: list[int]  # 0..999

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> Path:
        return self.root / self.names[i]


def read_labels(labels_file: Path) -> tuple[list[str], list[int]]:
    names, labels, seen = [], [], {}
    with open(labels_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.rsplit(None, 1)  # the label is the last field; a name may hold spaces
            if len(parts) != 2:
                raise DatasetError(f"{labels_file}:{lineno}: expected '<file> <label>', got {line!r}")
            name, label_text = parts[0].strip(), parts[1]
            try:
                label = int(label_text)
            except ValueError:
                raise DatasetError(f"{labels_file}:{lineno}: label {label_text!r} is not an integer") from None
            if not 0 <= label < NUM_CLASSES:
                raise DatasetError(f"{labels_file}:{lineno}: label {label} is outside 0..{NUM_CLASSES - 1}")
            if name in seen:
                raise DatasetError(f"{labels_file}:{lineno}: {name!r} is listed twice (first on line {seen[name]})")
            seen[name] = lineno
            names.append(name)
            labels.append(label)
    return names, labels


def load_dataset(root: str | Path, labels: str | Path | None = None, limit: int | None = None,
                 allow_missing: bool = False) -> Dataset:
    """The labelled list; a listed file that is missing is an error unless `allow_missing`
    (dataset.on_error=skip), in which case the cache records it as unreadable."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    labels_file = Path(labels).expanduser().resolve() if labels else root / "val_map.txt"
    if not labels_file.is_file():
        raise DatasetError(f"{labels_file}: labels file not found (set dataset.labels)")
    names, label_list = read_labels(labels_file)
    if limit is not None:
        if limit <= 0:
            raise DatasetError(f"dataset.limit must be positive, got {limit}")
        names, label_list = names[:limit], label_list[:limit]
    if not names:
        raise DatasetError(f"{labels_file}: lists no images")
    missing = [n for n in names if not (root / n).is_file()]
    if missing and not allow_missing:
        shown = ", ".join(repr(str(root / n)) for n in missing[:5])
        raise DatasetError(f"{len(missing)} image(s) listed in {labels_file} are missing: {shown}"
                           + (" ..." if len(missing) > 5 else ""))
    return Dataset(root, labels_file, names, label_list)
