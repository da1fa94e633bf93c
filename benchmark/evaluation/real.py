"""ImageNet-ReaL (Beyer et al. 2020): each validation image scored against its reassessed set of
plausible labels (shipped as `preprocessing/labels/real.json`) instead of its one original label.
As defined there: images whose set is empty are left out (and counted), and a prediction is right
when it is in the image's set; top-5 is right when any of the five is."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import PurePosixPath

from preprocessing.dataset import VALIDATION_IMAGES, shipped
from preprocessing.errors import UserError

VALIDATION_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")
LABEL_SET = "ImageNet-ReaL"


class RealError(UserError, ValueError):
    pass


@cache
def real_sets() -> tuple[frozenset, ...]:
    """The 50,000 label sets, image ILSVRC2012_val_{i+1:08d}.JPEG at index i; the file's sha256 is
    checked on read."""
    path = shipped("real.json")
    sets = json.loads(path.read_text())
    if len(sets) != VALIDATION_IMAGES or not all(isinstance(s, list) for s in sets):
        raise RealError(f"{path}: expected a list of {VALIDATION_IMAGES:,} label lists")
    return tuple(frozenset(s) for s in sets)


def set_of(name: str, sets: tuple[frozenset, ...]) -> frozenset:
    """The ReaL label set of a validation image, by its file name (in any folder)."""
    match = VALIDATION_NAME.fullmatch(PurePosixPath(name).name)
    number = int(match.group(1)) if match else 0
    if not 1 <= number <= VALIDATION_IMAGES:
        raise RealError(f"labels.real=true: {name!r} is not an ImageNet validation image name "
                        "(ILSVRC2012_val_NNNNNNNN.JPEG): ReaL labels exist for those 50,000 images only")
    return sets[number - 1]


def check(names: list[str]) -> None:
    """Before any image is read: every image must be a validation image (the error names the first
    that is not)."""
    sets = real_sets()
    for name in names:
        set_of(name, sets)


def score(names: list[str], best: list) -> dict:
    """ReaL top-1 and top-5 of the images `names`, from each image's best classes (`best`: best
    first; None for an image not scored). Top-5 is left out (None) where an image has fewer than five
    (an MLPerf accuracy log holds the top-1 answer only)."""
    sets = real_sets()
    labelled = [(set_of(name, sets), calls) for name, calls in zip(names, best) if calls is not None]
    scored = [(s, calls) for s, calls in labelled if s]
    total = len(scored)
    good = sum(calls[0] in s for s, calls in scored)
    good5 = sum(any(c in s for c in calls[:5]) for s, calls in scored) \
        if all(len(calls) >= 5 for _, calls in scored) else None
    return {"label_set": LABEL_SET, "labels": "real.json (google-research/reassessed-imagenet)",
            "top1": 100.0 * good / total if total else None,
            "top5": 100.0 * good5 / total if total and good5 is not None else None,
            "good": good, "top5_good": good5, "total": total, "empty_sets_left_out": len(labelled) - total}


def line(real: dict) -> str:
    """The ReaL accuracy line, in MLPerf's accuracy line's form."""
    if not real["total"]:
        return f"real: no image with a ReaL label ({real['empty_sets_left_out']} with an empty set left out)"
    top5 = f", top5={real['top5']:.3f}%" if real["top5"] is not None else ""
    return (f"real: accuracy={real['top1']:.3f}%, good={real['good']}, total={real['total']}{top5} "
            f"({real['empty_sets_left_out']} images with an empty ReaL set left out)")
