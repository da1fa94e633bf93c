"""The submission folder in the layout MLPerf's submission checker reads, written from finished
LoadGen runs:

    <division>/<submitter>/systems/<system>.json
    <division>/<submitter>/src/README.md
    <division>/<submitter>/results/<system>/<benchmark>/<scenario>/
        README.md, user.conf, measurements.json
        accuracy/   mlperf_log_{detail,summary}.txt, accuracy.txt, mlperf_log_accuracy.json (truncated)
        performance/run_1/   mlperf_log_{detail,summary}.txt
        TEST01/     verify_accuracy.txt, verify_performance.txt, performance/run_1/mlperf_log_{detail,summary}.txt
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from preprocessing.files import write_text_atomically

VIEWABLE = 4096  # MLPerf's truncation keeps the first and the last 4 KiB of an accuracy log
MAX_ACCURACY_LOG = 10 * 1024  # the checker's limit on a submitted accuracy log
LOG_FILES = ("mlperf_log_detail.txt", "mlperf_log_summary.txt")


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def truncated(text: str) -> str:
    """An accuracy log cut as MLPerf's truncate_accuracy_log.py cuts it: its first and last 4 KiB
    around a marker (a log shorter than 4 KiB is kept whole)."""
    if len(text) < VIEWABLE:
        return text
    return text[:VIEWABLE] + "\n\n...\n\n" + text[-VIEWABLE:]


def accuracy_folder(run: Path, out: Path, accuracy_line: str) -> None:
    """A finished accuracy run's logs as the checker wants them: accuracy.txt is the accuracy script's
    line and the sha256 of the whole log (as MLPerf's truncation script appends it), the log truncated."""
    out.mkdir(parents=True, exist_ok=True)
    for name in LOG_FILES:
        shutil.copyfile(run / name, out / name)
    log = run / "mlperf_log_accuracy.json"
    write_text_atomically(out / "accuracy.txt", f"{accuracy_line}\n\nhash={sha256(log)}\n")
    write_text_atomically(out / "mlperf_log_accuracy.json", truncated(log.read_text()))


def performance_folder(run: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in LOG_FILES:
        shutil.copyfile(run / name, out / name)


def verify_accuracy(check: dict) -> str:
    """TEST01's accuracy verdict in the form the checker reads (a line `TEST PASS`): the answers logged in
    performance mode compared, as float32 values, with the accuracy run's for the same samples."""
    return (f"answers logged in performance mode: {check['logged']}\n"
            f"equal to the accuracy run's (compared as float32 values): {check['same']}\n"
            f"differing: {len(check['differing'])}\n"
            f"not in the accuracy log: {check['not_in_accuracy_log']}\n"
            f"TEST {'PASS' if check['passed'] else 'FAIL'}\n")


# TEST01's performance run logs a sample of its answers, which costs a little: MLPerf's verification
# accepts it within 10 % of the scenario's own performance run.
PERFORMANCE_TOLERANCE = 0.10


def verify_performance(reference, audited) -> tuple[bool, str]:
    """TEST01's performance run against the scenario's (each a results.LoadGenBlock): throughput no
    lower, latency no higher, than 10 %."""
    ref, got = reference.value, audited.value
    higher_is_better = reference.unit != "ns"
    ratio = got / ref if ref else 0.0
    passed = ratio >= 1 - PERFORMANCE_TOLERANCE if higher_is_better else ratio <= 1 + PERFORMANCE_TOLERANCE
    text = (f"reference {reference.metric}: {ref}\ncompliance {audited.metric}: {got}\n"
            f"ratio: {ratio:.4f} (within {PERFORMANCE_TOLERANCE:.0%}: {'higher' if higher_is_better else 'lower'} "
            f"is better)\nTEST {'PASS' if passed else 'FAIL'}\n")
    return passed, text


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(value, indent=2) + "\n")
