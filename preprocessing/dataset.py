"""The labelled image list, from the ImageNet validation layouts people hold:

- `val_map`: a folder and an MLPerf `val_map.txt` (`<file> <label>` per line): `dataset.labels`, or
  `<root>/val_map.txt`, or, for a folder of `ILSVRC2012_val_*.JPEG` without one, MLPerf's own
  50,000-line val_map shipped in this package (the images present, in its order);
- `imagefolder`: `root/<wnid>/<file>`, torchvision's ImageFolder layout (label = the wnid's position
  among the 1,000 sorted ILSVRC2012 synsets, also shipped), validation images checked against val_map;
- `imagenetv2`: ImageNetV2's folders, `root/<class index>/<file>` with class indices `0`..`999`
  (the label is the folder's number; folders are taken in numeric order, not sorted as strings);
- `tar`: the official `ILSVRC2012_img_val.tar` (or a tar of either layout above), read member by
  member in place, never extracted.

Every layout yields the same `Dataset`: names relative to the root, labels 0..999, and the bytes
of each image, so crops, cache keys and predictions do not depend on how the images are stored.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tarfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath

from preprocessing.errors import UserError
from preprocessing.pipelines import ImageError, read_file

NUM_CLASSES = 1000
VALIDATION_IMAGES = 50_000
LAYOUTS = ("auto", "val_map", "imagefolder", "imagenetv2", "tar")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
WNID = re.compile(r"n\d{8}")
CLASS_INDEX = re.compile(r"0|[1-9]\d{0,2}")  # ImageNetV2's class folders: 0..999, no leading zeros
LABELS = Path(__file__).parent / "labels"
# MLPerf's val_map.txt (labels 0..999 for ILSVRC2012_val_00000001..50000.JPEG) and the 1,000
# ILSVRC2012 synsets in sorted order (caffe's synset_words.txt): checked whenever they are read.
SHIPPED_SHA256 = {"val_map.txt": "4138c0cd92d2dffea9353a9339c9f352361b7c6c267d2ff989b366f154188257",
                  "synsets.txt": "acf75ef0abe89694b19056e0796401068b459c457baa30335f240c7692857355",
                  # MLPerf's calibration lists (calibration/ImageNet/ in its inference repository)
                  "cal_image_list_option_1.txt": "7662247d1d9407d6cb564268f64c5a4a6cf9f1a34fd2e6cdc3b94dcf278b3dc9",
                  "cal_image_list_option_2.txt": "11ce810122226ec0ca8c56e47ee356e3c1185f3c6ce8262edb50c3c1d0a9705e",
                  # ImageNet-ReaL's reassessed label sets (google-research/reassessed-imagenet, Apache-2.0)
                  "real.json": "d83e9bff374c631aae8439eb064c7019acc56e1b3bc3f56b8380c2a710b0220b"}


class DatasetError(UserError, ValueError):
    """A labels file, image folder or archive that cannot be used; the message names the file."""


def shipped(name: str) -> Path:
    path = LABELS / name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHIPPED_SHA256[name]:
        raise DatasetError(f"{path}: sha256 {digest} is not the shipped file's {SHIPPED_SHA256[name]}; "
                           "the installation is damaged: reinstall the package")
    return path


@cache
def imagenet_val_map() -> dict[str, int]:
    """MLPerf's val_map for all 50,000 validation images: name -> label, in file order."""
    names, labels = read_labels(shipped("val_map.txt"))
    return dict(zip(names, labels))


@cache
def imagenet_synsets() -> list[str]:
    """The 1,000 ILSVRC2012 wnids, sorted: a wnid's position is its label."""
    return [line.split()[0] for line in shipped("synsets.txt").read_text().splitlines()]


class Folder:
    """Images stored as files under a folder."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, name: str) -> str:
        return str(self.root / name)

    def read(self, name: str) -> bytes:
        return read_file(self.root / name)

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def stats(self, names: list[str]) -> list[list[int] | None]:
        """[size, mtime_ns] per file; None for a missing one."""
        stats = []
        for name in names:
            try:
                st = os.stat(self.root / name)
                stats.append([st.st_size, st.st_mtime_ns])
            except FileNotFoundError:
                stats.append(None)
        return stats


class TarArchive:
    """Images stored as the members of an uncompressed tar, read in place at their offsets."""

    def __init__(self, path: Path):
        self.root = path
        with open(path, "rb") as f:
            magic = f.read(6)
        for kind, prefix in (("gzip", b"\x1f\x8b"), ("bzip2", b"BZh"), ("xz", b"\xfd7zXZ")):
            if magic.startswith(prefix):
                raise DatasetError(f"{path}: a {kind}-compressed tar cannot be read in place; "
                                   "decompress it (the official ILSVRC2012_img_val.tar is not compressed)")
        self.members: dict[str, tuple[int, int]] = {}  # name -> (offset of its data, size)
        self.refused: dict[str, str] = {}  # name -> why its data cannot be read in place (named on read)
        self.complete = True
        try:
            with tarfile.open(path, "r:") as tar:
                while True:
                    try:
                        m = tar.next()
                    except tarfile.ReadError:  # after a member whose data runs past the end
                        self.complete = False
                        break
                    if m is None:
                        break
                    name = m.name.removeprefix("./")
                    if m.isdir() or _hidden(name):  # hidden as a folder's listing hides them: macOS's ._ files
                        continue
                    if name in self.members or name in self.refused:
                        raise DatasetError(f"{path}: member {name!r} is in the archive twice")
                    if m.islnk():  # a hard link: the data of the member it names
                        target = m.linkname.removeprefix("./")
                        if target in self.members:
                            self.members[name] = self.members[target]
                        else:
                            self.refused[name] = f"a hard link to {target!r}, which is not an earlier file member"
                    elif m.issparse():  # its data is stored in pieces, not as the file's bytes
                        self.refused[name] = "a sparse member, whose data cannot be read in place"
                    elif m.isfile():
                        self.members[name] = (m.offset_data, m.size)
                    elif m.issym():
                        self.refused[name] = f"a symbolic link to {m.linkname!r}"
                end = tar.offset  # where the end-of-archive marker should be
        except tarfile.TarError as e:  # no first member
            raise DatasetError(f"{path}: not a readable tar archive ({e})") from None
        if self.complete:  # tarfile stops quietly where an archive is cut short at a header: the marker tells
            with open(path, "rb") as f:
                f.seek(end)
                marker = f.read(1024)
            self.complete = len(marker) == 1024 and not any(marker)

    def path(self, name: str) -> str:
        return f"{self.root}:{name}"

    def read(self, name: str) -> bytes:
        if name in self.refused:
            raise ImageError(f"{self.path(name)}: {self.refused[name]}; extract the archive, or re-create it "
                             f"with plain file members")
        if name not in self.members:
            raise ImageError(f"{self.path(name)}: file not found (no such member)")
        offset, size = self.members[name]
        try:
            with open(self.root, "rb") as f:
                data = os.pread(f.fileno(), size, offset)
        except OSError as e:
            raise ImageError(f"{self.path(name)}: cannot read ({e.strerror or e})") from e
        if len(data) < size:
            raise ImageError(f"{self.path(name)}: truncated tar member ({len(data)} of its {size} bytes "
                             "are in the archive)")
        return data

    def has(self, name: str) -> bool:
        return name in self.members or name in self.refused

    def names(self) -> list[str]:
        """Every member that is, or stands for, a file (read or refused by name)."""
        return [*self.members, *self.refused]

    def stats(self, names: list[str]) -> list[list[int] | None]:
        """[member size, archive size, archive mtime_ns] per member; None for a missing one."""
        st = os.stat(self.root)
        return [[self.members[n][1], st.st_size, st.st_mtime_ns] if n in self.members else None for n in names]


@dataclass(frozen=True)
class Dataset:
    root: Path  # the folder, or the tar archive
    layout: str  # val_map | imagefolder | imagenetv2 | tar
    labels_from: str  # "labels file", "shipped val_map", "class folders" or "class index folders"
    labels_file: Path | None  # the labels file read (None: labels from class folders)
    names: list[str]  # relative to root (files or archive members), in evaluation order
    labels: list[int]  # 0..999
    source: Folder | TarArchive = field(repr=False)
    absent: int = 0  # of the 50,000 validation images, how many are not there (labelled by val_map or folders)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def label_set(self) -> str:
        """Whose labels score the images: ILSVRC2012's (val_map, wnid folders), ImageNetV2's (class
        index folders), or a labels file's."""
        if self.labels_from == "class index folders":
            return "ImageNetV2"
        return "labels file" if self.labels_from == "labels file" else "ILSVRC2012"

    def path(self, i: int) -> str:
        """Where image i is, for messages: a file's path, or `<archive>:<member>`."""
        return self.source.path(self.names[i])

    def read(self, i: int) -> bytes:
        return self.source.read(self.names[i])

    def stats(self) -> list[list[int] | None]:
        """Per image, what tells that its source changed (sizes, mtimes); None where it is missing."""
        return self.source.stats(self.names)

    def sha256(self, i: int) -> str | None:
        """The image's content digest; None where it cannot be read (as the cache records it)."""
        try:
            return hashlib.sha256(self.read(i)).hexdigest()
        except ImageError:
            return None


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
            if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
                raise DatasetError(f"{labels_file}:{lineno}: {name!r} points outside dataset.root; names are "
                                   "relative to it (set dataset.root to a folder that holds every image)")
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


def _hidden(name: str) -> bool:
    """A name with a part starting with a dot, as folders' listings leave them out (macOS's ._ files)."""
    return any(part.startswith(".") for part in PurePosixPath(name).parts)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _say(message: str) -> None:
    print(f"dataset: {message}", file=sys.stderr)


def _images_only(names: list[str], where: Path) -> list[str]:
    """The image files among `names` (by extension); the others are left out, and said so."""
    images = [n for n in names if is_image(n)]
    others = [n for n in names if not is_image(n)]
    if others:
        _say(f"{where}: {len(others)} not image files ({', '.join(IMAGE_SUFFIXES)}), left out: "
             + ", ".join(repr(n) for n in others[:3]) + (" ..." if len(others) > 3 else ""))
    return images


def _by_validation_name(names: list[str], where: Path) -> tuple[list[str], list[int], int]:
    """Named validation images labelled by the shipped val_map, in its order. Returns the names,
    labels and how many of the 50,000 are absent."""
    val_map = imagenet_val_map()
    by_base: dict[str, str] = {}
    for name in names:
        base = PurePosixPath(name).name
        if base not in val_map:
            raise DatasetError(f"{where}: {name!r} is not an ImageNet validation image name "
                               "(ILSVRC2012_val_NNNNNNNN.JPEG), so its label is unknown: give the labels "
                               "with dataset.labels=<val_map.txt>")
        if base in by_base:
            raise DatasetError(f"{where}: {base} is there twice: {by_base[base]!r} and {name!r}")
        by_base[base] = name
    ordered = [base for base in val_map if base in by_base]
    return [by_base[b] for b in ordered], [val_map[b] for b in ordered], _absent(len(ordered), where)


def _absent(present: int, where: Path) -> int:
    """How many of the 50,000 validation images are not there, said on stderr when any are not."""
    absent = VALIDATION_IMAGES - present
    if absent:
        _say(f"{where}: {present:,} of the {VALIDATION_IMAGES:,} ImageNet validation images are present "
             f"({absent:,} missing); evaluating those present")
    return absent


def _by_class_folder(names: list[str], where: Path) -> tuple[list[str], list[int], int]:
    """`[prefix/]<wnid>/<file>` labelled by the wnid's position among the sorted synsets; validation
    images whose folder disagrees with val_map are an error. Order: validation images in val_map
    order, then the others sorted. Returns the names, labels and how many of the 50,000 validation
    images are absent (0 where none is there: not a validation set)."""
    synsets = imagenet_synsets()
    index = {wnid: i for i, wnid in enumerate(synsets)}
    val_map = imagenet_val_map()
    position = {name: i for i, name in enumerate(val_map)}
    validation, others, wrong = {}, [], []
    for name in names:
        path = PurePosixPath(name)
        if path.parent.name not in index:
            raise DatasetError(f"{where}: {name!r} is not in one of the 1,000 ILSVRC2012 class folders "
                               f"(<wnid>/<file>, wnids such as {synsets[0]})")
        label = index[path.parent.name]
        if path.name not in val_map:
            others.append((name, label))
            continue
        if path.name in validation:
            raise DatasetError(f"{where}: {path.name} is there twice: {validation[path.name][0]!r} and {name!r}")
        validation[path.name] = (name, label)
        if val_map[path.name] != label:
            wrong.append((name, label, val_map[path.name]))
    if wrong:
        name, label, expected = wrong[0]
        raise DatasetError(f"{where}: {name!r} is in folder {synsets[label]} (label {label}), but MLPerf's val_map "
                           f"labels it {expected} ({synsets[expected]}): {len(wrong)} validation image(s) are "
                           "in the wrong class folder, which would silently cost accuracy")
    ordered = [validation[base] for base in sorted(validation, key=position.__getitem__)] + sorted(others)
    absent = _absent(len(validation), where) if validation else 0
    return [n for n, _ in ordered], [label for _, label in ordered], absent


def _by_class_index(names: list[str], where: Path) -> tuple[list[str], list[int]]:
    """ImageNetV2's `[prefix/]<index>/<file>`, labelled by the folder's number, in numeric folder
    order (then by file name): the order of the labels, as `sorted()` of the folder names is not."""
    labelled = []
    for name in names:
        folder = PurePosixPath(name).parent.name
        if not CLASS_INDEX.fullmatch(folder):
            raise DatasetError(f"{where}: {name!r} is not in a class index folder (ImageNetV2's layout: "
                               "<0..999>/<file>)")
        labelled.append((int(folder), name))
    labelled.sort()
    return [name for _, name in labelled], [label for label, _ in labelled]


def _by_labels_file(labels_file: Path, source, allow_missing: bool) -> tuple[list[str], list[int]]:
    names, labels = read_labels(labels_file)
    missing = [n for n in names if not source.has(n)]
    if missing and not allow_missing:
        shown = ", ".join(repr(source.path(n)) for n in missing[:5])
        raise DatasetError(f"{len(missing)} image(s) listed in {labels_file} are missing: {shown}"
                           + (" ..." if len(missing) > 5 else ""))
    return names, labels


def detect_layout(root: Path, labels) -> str:
    """The layout of `root`: a tar archive; a folder with a labels file; a folder of class folders;
    or a folder of validation images."""
    if root.is_file():
        if tarfile.is_tarfile(root) or root.suffix == ".tar":
            return "tar"
        raise DatasetError(f"{root}: neither a folder of images nor a tar archive of them")
    if labels or (root / "val_map.txt").is_file():
        return "val_map"
    entries = [e for e in os.scandir(root) if not e.name.startswith(".")]
    folders = sorted(e.name for e in entries if e.is_dir() and WNID.fullmatch(e.name))
    indices = sorted(e.name for e in entries if e.is_dir() and CLASS_INDEX.fullmatch(e.name))
    images = sorted(e.name for e in entries if e.is_file() and is_image(e.name))
    if indices and (folders or images):
        other = f"class folders ({folders[0]}, ...)" if folders else f"images ({images[0]}, ...)"
        raise DatasetError(f"{root}: holds both ImageNetV2's class index folders ({indices[0]}, ...) and {other}; "
                           "set dataset.layout")
    if indices:
        return "imagenetv2"
    if folders and images:
        raise DatasetError(f"{root}: holds both class folders ({folders[0]}, ...) and images ({images[0]}, ...); "
                           "set dataset.layout=imagefolder or dataset.layout=val_map")
    if folders:
        return "imagefolder"
    if images:
        return "val_map"
    raise DatasetError(f"{root}: no val_map.txt, no images and no class folders (<wnid>/, such as n01440764/, "
                       "or ImageNetV2's 0/..999/): "
                       "expected ImageNet validation images in one of the layouts dataset.layout names "
                       f"({', '.join(LAYOUTS[1:])})")


def _folder_images(root: Path, layout: str) -> list[str]:
    """Relative names of the images of a folder: its own (val_map) or its class folders' (imagefolder,
    imagenetv2)."""
    entries = sorted((e for e in os.scandir(root) if not e.name.startswith(".")), key=lambda e: e.name)
    if layout == "val_map":
        return _images_only([e.name for e in entries if e.is_file()], root)
    names = []
    for e in entries:
        if e.is_dir():
            # A folder inside a class folder is listed with its slash: left out as no image, and said so.
            names += [f"{e.name}/{f.name}" + ("" if f.is_file() else "/") for f in os.scandir(e.path)
                      if not f.name.startswith(".")]
        elif is_image(e.name):
            raise DatasetError(f"{root / e.name}: an image outside the class folders (layout {layout})")
    return _images_only(sorted(names), root)


def load_dataset(root: str | Path, labels: str | Path | None = None, limit: int | None = None,
                 allow_missing: bool = False, layout: str = "auto") -> Dataset:
    """The labelled list of the images under `root` (a folder or a tar archive), in evaluation order.

    A listed file that is missing is an error unless `allow_missing` (dataset.on_error=skip), in
    which case the cache records it as unreadable; so is a tar archive that is cut short."""
    if layout not in LAYOUTS:
        raise DatasetError(f"dataset.layout={layout}: expected one of {', '.join(LAYOUTS)}")
    if limit is not None and limit <= 0:
        raise DatasetError(f"dataset.limit must be positive, got {limit}")
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder or archive not found")
    labels_file = Path(labels).expanduser().resolve() if labels else None
    if labels_file is not None and not labels_file.is_file():
        raise DatasetError(f"{labels_file}: labels file not found (dataset.labels)")
    if layout == "auto":
        layout = detect_layout(root, labels_file)
    if (layout == "tar") != root.is_file():
        raise DatasetError(f"{root}: dataset.layout={layout} needs "
                           + ("a tar archive, not a folder" if layout == "tar" else "a folder, not a file"))

    if layout == "tar":
        source = TarArchive(root)
        if not source.complete:
            message = (f"{root}: the archive is cut short (no end-of-archive marker after its "
                       f"{len(source.members):,} members)")
            if not allow_missing:
                raise DatasetError(f"{message}: download it again, or set dataset.on_error=skip to evaluate "
                                   "the members that are complete")
            _say(f"{message}; a truncated member is skipped as unreadable")
    else:
        source = Folder(root)
        if layout == "val_map" and labels_file is None and (root / "val_map.txt").is_file():
            labels_file = root / "val_map.txt"

    absent = 0
    if labels_file is not None:
        names, label_list = _by_labels_file(labels_file, source, allow_missing)
        labels_from = "labels file"
    else:
        images = _images_only(source.names(), root) if layout == "tar" else _folder_images(root, layout)
        parents = {PurePosixPath(n).parent.name for n in images}
        if layout == "imagenetv2" or (layout == "tar" and parents and all(CLASS_INDEX.fullmatch(p) for p in parents)):
            names, label_list = _by_class_index(images, root)
            labels_from = "class index folders"
        elif layout == "imagefolder" or (layout == "tar" and any(WNID.fullmatch(PurePosixPath(n).parent.name)
                                                               for n in images)):
            names, label_list, absent = _by_class_folder(images, root)
            labels_from = "class folders"
        else:
            names, label_list, absent = _by_validation_name(images, root)
            labels_file, labels_from = LABELS / "val_map.txt", "shipped val_map"
    if not names:
        raise DatasetError(f"{labels_file if labels_from == 'labels file' else root}: no images")
    if limit is not None:
        names, label_list = names[:limit], label_list[:limit]
    return Dataset(root, layout, labels_from, labels_file, names, label_list, source, absent)
