"""MLPerf's calibration lists: the only images a quantized model may be calibrated on.

MLPerf ships two lists of 500 ImageNet validation file names (`calibration/ImageNet/
cal_image_list_option_1.txt` and `_option_2.txt`, shipped here with their sha256) and allows at most
one of them. `calibration=option_1|option_2` names a shipped list; a file of names is read too, and
recorded as MLPerf's list only when it holds exactly that list's names. A file named like MLPerf's
list whose content differs is refused (it presents itself as MLPerf's); a user's own file that holds
names of both lists is not MLPerf's list either way: it runs, with a note that says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from preprocessing.dataset import Dataset, DatasetError, shipped

LISTS = {"option_1": "cal_image_list_option_1.txt", "option_2": "cal_image_list_option_2.txt"}


class CalibrationError(DatasetError):
    """A calibration list that cannot be used as asked; the message names the file."""


@dataclass(frozen=True)
class CalibrationList:
    path: Path
    names: tuple[str, ...]
    sha256: str
    mlperf: str | None  # option_1 / option_2 when it is one of MLPerf's lists, unchanged
    note: str | None = None  # said when the list is used: why it is not MLPerf's

    def to_dict(self) -> dict:
        return {"list": str(self.path), "sha256": self.sha256, "mlperf_list": self.mlperf, "listed": len(self.names),
                "note": self.note}


def _names(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"{path}: cannot read the calibration list ({e})") from e
    names = [line.split()[0] for line in text.splitlines() if line.strip()]  # option_2 adds a label
    if not names:
        raise CalibrationError(f"{path}: the calibration list names no image")
    return names


def mlperf_list(option: str) -> CalibrationList:
    path = shipped(LISTS[option])  # checked against MLPerf's sha256
    return CalibrationList(path, tuple(_names(path)), hashlib.sha256(path.read_bytes()).hexdigest(), option)


def read_list(spec: str) -> CalibrationList:
    """`option_1`, `option_2`, or the path of a file of image names (one per line)."""
    if spec in LISTS:
        return mlperf_list(spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise CalibrationError(f"calibration={spec}: neither {' nor '.join(LISTS)} nor a file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    names = _names(path)
    mlperf = {option: mlperf_list(option) for option in LISTS}
    for option, known in mlperf.items():
        if path.name == LISTS[option] and digest != known.sha256:
            raise CalibrationError(f"{path}: named like MLPerf's {LISTS[option]} but its sha256 is {digest}, not "
                                   f"MLPerf's {known.sha256}: a changed list; use calibration={option}")
    # The two lists share a few names; a list mixes them when it holds names of each that the other lacks.
    one, two = (set(known.names) for known in mlperf.values())
    only = {"option_1": set(names) & (one - two), "option_2": set(names) & (two - one)}
    note = None
    if all(only.values()):
        note = (f"{path} holds names of both of MLPerf's calibration lists ({len(only['option_1'])} only in "
                f"option_1, {len(only['option_2'])} only in option_2): it is not MLPerf's list, and MLPerf allows "
                f"calibration on one of its lists only")
    same = next((option for option, known in mlperf.items() if set(known.names) == set(names)), None)
    return CalibrationList(path, tuple(names), digest, same, note)


def needed(cal: CalibrationList, min_images: int | None = None) -> int:
    """How many of the listed images a calibration needs: `min_images`, or every listed one."""
    return len(cal.names) if min_images is None else int(min_images)


def select(dataset: Dataset, cal: CalibrationList, min_images: int | None = None) -> tuple[list[int], list[str]]:
    """The dataset's indices of the listed images, in the list's order, and the listed names the
    dataset lacks; fewer found than `min_images` (default: every listed image) is an error."""
    where = {name: i for i, name in enumerate(dataset.names)}
    by_file = {Path(name).name: i for i, name in enumerate(dataset.names)}  # class folders, archives
    found, missing = [], []
    for name in cal.names:
        i = where.get(name, by_file.get(Path(name).name))
        (found if i is not None else missing).append(name if i is None else i)
    need = needed(cal, min_images)
    if len(found) < need:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
        raise CalibrationError(f"{cal.path}: {len(missing)} of its {len(cal.names)} images are not in the dataset "
                               f"at {dataset.root} ({shown}); {len(found)} found, {need} needed "
                               f"(calibration_min_images= allows fewer)")
    return found, missing


def calibration_dataset(dataset: Dataset, cal: CalibrationList, min_images: int | None = None
                        ) -> tuple[Dataset, list[str]]:
    """The listed images of `dataset` as a dataset of their own (cached with the evaluation's exact
    pipeline like any other), and the listed names it lacks."""
    found, missing = select(dataset, cal, min_images)
    return replace(dataset, names=[dataset.names[i] for i in found],
                   labels=[dataset.labels[i] for i in found]), missing
