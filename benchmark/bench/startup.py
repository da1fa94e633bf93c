"""Start-up: a fresh interpreter importing what each command imports before its first stage."""

from __future__ import annotations

import os
import sys
import time

# What each command imports before its first stage runs (the entry points import lazily; see tests).
STARTUP = {
    "python -m preprocessing (OpenCV or Pillow pipeline)": "import preprocessing.__main__, benchmark.run, preprocessing.cache",
    "python -m benchmark.mlperf_log": "import benchmark.mlperf_log",
    "python -m benchmark (torch backend)": "import benchmark.__main__, benchmark.run, benchmark.evaluation.loop, benchmark.convert",
    "python -m benchmark.loadgen (torch backend)": "import benchmark.loadgen.run, benchmark.evaluation.loop, benchmark.convert, mlperf_loadgen",
    "python -m benchmark backend=tf (or reference=tf)": "import benchmark.run, benchmark.evaluation.loop, benchmark.runtimes.tf; "
                                                        "from preprocessing.tf_import import import_tensorflow; import_tensorflow()",
}


def bench_startup(repeats: int = 3) -> list[tuple[str, float]]:
    """Each command's start-up: a fresh interpreter importing what it imports before its first stage
    (median of `repeats` processes)."""
    import statistics
    import subprocess

    rows = []
    for name, code in STARTUP.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            times.append(time.perf_counter() - start)
        rows.append((name, statistics.median(times)))
    return rows


def render(rows: list[tuple[str, float]], repeats: int) -> list[str]:
    return ["## Start-up (a fresh interpreter importing what each command imports before its first stage; "
            f"median of {repeats})", "", "| command | seconds |", "|---|---|",
            *[f"| {name} | {seconds:.2f} |" for name, seconds in rows], ""]
