"""MLPerf's accuracy log (`mlperf_log_accuracy.json`) read and scored the way MLPerf's
`tools/accuracy-imagenet.py` scores it, and compared image by image with a harness run.

LoadGen writes one entry per answered sample: `{"seq_id": n, "qsl_idx": i, "data": "<hex>"}`, the
data being the bytes the system under test answered with. For ImageNet the first value of the data,
read as `dtype`, is the predicted class and `qsl_idx` is the line of `val_map.txt`. As in MLPerf's
tool, a sample answered more than once counts once (its first entry) and the accuracy is over the
distinct samples in the log; unlike it, samples the labels list that the log lacks are reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.evaluation.results import Results
from preprocessing.errors import UserError

DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64}
NUM_CLASSES = 1000


class LogError(UserError, ValueError):
    """An accuracy log, labels list or results file that cannot be scored."""


def read_labels(path: Path) -> list[tuple[str, int]]:
    """MLPerf's val_map.txt format: `<file> <label>` per line, the line number being the sample index."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise LogError(f"{path}: cannot read the labels list ({e.strerror})") from e
    labels = []
    for number, line in enumerate(lines, 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 2 or not cols[1].lstrip("-").isdigit():
            raise LogError(f"{path}:{number}: expected '<file> <label>', got {line!r}")
        labels.append((cols[0], int(cols[1])))
    if not labels:
        raise LogError(f"{path}: the labels list is empty")
    return labels


def read_log(path: Path) -> list[dict]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise LogError(f"{path}: cannot read the accuracy log ({e.strerror})") from e
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise LogError(f"{path}: not JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                       f"a log cut short by a run that did not finish?") from e
    if not isinstance(entries, list):
        raise LogError(f"{path}: expected a JSON list of LoadGen entries, got {type(entries).__name__}")
    return entries


def decode(entry, number: int, dtype: str, count: int, path: Path) -> tuple[int, int]:
    """(qsl_idx, answer) of one entry: the first value of its data, as MLPerf's tool reads it."""
    where = f"{path}: entry {number}"
    if not isinstance(entry, dict) or "qsl_idx" not in entry or "data" not in entry:
        raise LogError(f"{where}: expected an object with 'qsl_idx' and 'data', got {str(entry)[:80]}")
    idx, data = entry["qsl_idx"], entry["data"]
    if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < count:
        raise LogError(f"{where}: qsl_idx {idx!r} is not a line of the labels list (0..{count - 1})")
    try:
        raw = bytes.fromhex(data)
    except (TypeError, ValueError) as e:
        raise LogError(f"{where} (qsl_idx {idx}): data {str(data)[:40]!r} is not hex") from e
    size = np.dtype(DTYPES[dtype]).itemsize
    if len(raw) < size or len(raw) % size:
        raise LogError(f"{where} (qsl_idx {idx}): {len(raw)} bytes of data are not whole {dtype} values")
    value = np.frombuffer(raw, DTYPES[dtype])[0]
    # An answer is a class or -1 (background); MLPerf's tool truncates a float one. Data read as the
    # wrong type give what no system answers: int32 answers read as float32 are denormals (which would
    # truncate to class 0), float32 answers read as int32 are numbers far beyond the classes.
    denormal = dtype == "float32" and 0 < abs(float(value)) < np.finfo(np.float32).tiny
    if not math.isfinite(value) or denormal or not -1 <= int(value) < NUM_CLASSES:
        raise LogError(f"{where} (qsl_idx {idx}): the answer read as {dtype} is {value}, not a class "
                       f"(-1..{NUM_CLASSES - 1}): the log's answers are of another type (--dtype)")
    return idx, int(value)


@dataclass
class LogScore:
    good: int
    answers: dict[int, int]  # sample index -> answer (its first entry)
    entries: int
    conflicting: list[int] = field(default_factory=list)  # answered again, differently
    missing: list[int] = field(default_factory=list)  # listed in the labels, not in the log
    dtype: str = "float32"  # how the answers were read

    @property
    def total(self) -> int:
        return len(self.answers)

    @property
    def duplicates(self) -> int:
        return self.entries - len(self.answers)

    @property
    def top1(self) -> float:
        return 100.0 * self.good / self.total

    def mlperf_line(self) -> str:
        return f"accuracy={self.top1:.3f}%, good={self.good}, total={self.total}"


def detect_dtype(entries: list, count: int, path: Path) -> str:
    """The type under which every answer is a class: float32 (MLPerf's reference app), int32, int64,
    those as long as one entry's data tried first."""
    try:
        size = len(bytes.fromhex(entries[0]["data"]))
    except (TypeError, ValueError, KeyError):
        size = 4
    for dtype in sorted(DTYPES, key=lambda d: np.dtype(DTYPES[d]).itemsize != size):
        try:
            for number, entry in enumerate(entries):
                decode(entry, number, dtype, count, path)
            return dtype
        except LogError:
            continue
    for number, entry in enumerate(entries):  # no type fits: the first bad entry's error, as float32
        decode(entry, number, "float32", count, path)
    raise LogError(f"{path}: the answers are classes under none of {', '.join(DTYPES)}")


def score(entries: list, labels: list[tuple[str, int]], dtype: str = "auto",
          path: Path = Path("mlperf_log_accuracy.json")) -> LogScore:
    if dtype != "auto" and dtype not in DTYPES:
        raise LogError(f"dtype {dtype!r}: expected auto or one of {', '.join(DTYPES)}")
    if not entries:
        raise LogError(f"{path}: the log has no entries (a performance-mode log, or no sample answered)")
    if dtype == "auto":
        dtype = detect_dtype(entries, len(labels), path)
    answers: dict[int, int] = {}
    conflicting = set()
    for number, entry in enumerate(entries):
        idx, answer = decode(entry, number, dtype, len(labels), path)
        if idx not in answers:
            answers[idx] = answer
        elif answers[idx] != answer:
            conflicting.add(idx)
    good = sum(answer == labels[idx][1] for idx, answer in answers.items())
    missing = [i for i in range(len(labels)) if i not in answers]
    return LogScore(good, answers, len(entries), sorted(conflicting), missing, dtype)


def score_file(log: Path, labels_file: Path, dtype: str = "auto") -> LogScore:
    return score(read_log(log), read_labels(labels_file), dtype, Path(log))


def compare_with_run(log_score: LogScore, labels: list[tuple[str, int]], results: Results) -> dict:
    """The log's answers against a harness run's predictions, image by image (matched by file name)."""
    if results.images is None or results.predictions is None:
        raise LogError(f"{results.path}: no 'images' and 'predictions' (not a harness results file, or one "
                       f"written before runs listed their images: run it again)")
    run = {name: p for name, p in zip(results.images, results.predictions) if p is not None}
    rows = {"log_wrong_run_right": [], "log_right_run_wrong": [], "both_wrong_differently": []}
    not_in_run = []
    for idx, answer in sorted(log_score.answers.items()):
        name, label = labels[idx]
        if name not in run:
            not_in_run.append(name)
            continue
        theirs = run[name]
        row = {"image": name, "label": label, "log": answer, "run": theirs}
        if answer != label and theirs == label:
            rows["log_wrong_run_right"].append(row)
        elif answer == label and theirs != label:
            rows["log_right_run_wrong"].append(row)
        elif answer != theirs:
            rows["both_wrong_differently"].append(row)
    in_log = {labels[idx][0] for idx in log_score.answers}
    compared = len(log_score.answers) - len(not_in_run)
    return {**rows, "compared": compared,
            "same_answer": compared - sum(len(r) for r in rows.values()),
            "in_log_not_in_run": not_in_run,
            "in_run_not_in_log": sorted(set(run) - in_log)}




def same_answers(accuracy_entries: list, performance_entries: list) -> dict:
    """TEST01's check, as MLPerf's `compliance/nvidia/TEST01/verify_accuracy.py` makes it: every
    answer a performance run logged must equal the accuracy run's answer for the same sample
    (qsl_idx). MLPerf's script compares the first element under its --dtype (default: the first
    byte); here the whole answer is compared, byte for byte. Passes when no logged answer differs
    and at least one was compared."""
    first: dict = {}
    for e in accuracy_entries:
        first.setdefault(e["qsl_idx"], e["data"])  # a sample's first answer, as it is scored
    matched, differing, unknown = 0, [], 0
    for e in performance_entries:
        if e["qsl_idx"] not in first:
            unknown += 1
        elif e["data"] != first[e["qsl_idx"]]:
            differing.append({"qsl_idx": e["qsl_idx"], "performance": e["data"], "accuracy": first[e["qsl_idx"]]})
        else:
            matched += 1
    return {"logged": len(performance_entries), "same": matched, "differing": differing,
            "not_in_accuracy_log": unknown, "passed": not differing and matched > 0}
