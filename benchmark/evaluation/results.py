"""A results file: which kind it is, which version of the schema wrote it, and the one reader that
every command reading results goes through (benchmark.table and its report, mlperf_log --compare,
the submission).

Three kinds, told apart by the `kind` field (files written before it by which keys they hold):
"accuracy" (`python -m benchmark`: scores and every image's prediction), "loadgen-accuracy" (a
LoadGen accuracy run: the same, with its `loadgen` block) and "loadgen-performance" (LoadGen's
performance run: its facts and outcome, no prediction). A command given a kind it cannot read says
so, naming the file; a file of a newer schema than this harness writes is refused, not half read.
"""

from __future__ import annotations

import json
from pathlib import Path

from preprocessing.errors import UserError

SCHEMA_VERSION = 2  # 1: the files written before `schema_version` and `kind` (read as upgraded)
KINDS = {"accuracy": "an accuracy run's results (python -m benchmark)",
         "loadgen-accuracy": "a LoadGen accuracy run's results",
         "loadgen-performance": "a LoadGen performance run's results (its speed: no prediction)"}
WITH_PREDICTIONS = ("accuracy", "loadgen-accuracy")


class ResultsError(UserError, ValueError):
    pass


def stamped(results: dict, kind: str) -> dict:
    """`results` with its schema version and kind first, as every writer writes them."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind}: expected one of {', '.join(KINDS)}")
    rest = {k: v for k, v in results.items() if k not in ("schema_version", "kind")}
    return {"schema_version": SCHEMA_VERSION, "kind": kind, **rest}


def kind_of(results: dict) -> str:
    """A file's kind: its field, or for a file written before it, read off the keys it holds."""
    if "kind" in results:
        return results["kind"]
    loadgen = results.get("loadgen") or {}
    if loadgen.get("mode") == "performance":
        return "loadgen-performance"
    return "loadgen-accuracy" if loadgen else "accuracy"


def upgraded(results: dict, path: Path | str) -> dict:
    """`results` as the current schema has it: an older file gains its version and kind; a newer
    one is refused."""
    version = results.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ResultsError(f"{path}: results of schema version {version}, newer than this harness reads "
                           f"({SCHEMA_VERSION}): read it with the version that wrote it, or update the harness")
    return stamped(results, kind_of(results))


def read_results(path: Path | str, kinds: tuple[str, ...] = WITH_PREDICTIONS, command: str = "this command") -> dict:
    """The results file at `path`, upgraded; a clear error for a file that is not JSON, not a results
    file, of a newer schema, or of a kind `command` does not read (`kinds`)."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: not a readable results file ({e})") from e
    if not isinstance(results, dict) or not ({"kind", "checkpoint"} & results.keys()):
        raise ResultsError(f"{path}: not a results file of the harness (no kind, no checkpoint)")
    results = upgraded(results, path)
    if results["kind"] not in kinds:
        raise ResultsError(f"{path}: {KINDS.get(results['kind'], results['kind'])}; {command} reads "
                           f"{' or '.join(KINDS[k] for k in kinds)}")
    return results
