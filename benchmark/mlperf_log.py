"""python -m benchmark.mlperf_log mlperf_log_accuracy.json [--labels val_map.txt]
    [--dtype float32|int32|int64] [--compare RESULTS_JSON] [--verbose]

Scores MLPerf's accuracy log as MLPerf's `tools/accuracy-imagenet.py` does (evaluation/accuracy_log.py)
and, with --compare, lists the images where a harness run answered otherwise."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmark.evaluation.accuracy_log import DTYPES, LogError, compare_with_run, read_labels, read_log, score
from preprocessing.errors import UserError


def _names(indices: list[int], labels, limit: int | None) -> str:
    shown = ", ".join(labels[i][0] for i in indices[:limit])
    return shown + (f", ... ({len(indices) - limit} more)" if limit is not None and len(indices) > limit else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.mlperf_log", description="Scores MLPerf's accuracy log as MLPerf's accuracy-imagenet.py does.")
    parser.add_argument("log", type=Path, help="mlperf_log_accuracy.json")
    parser.add_argument("--labels", type=Path, help="val_map.txt whose lines the log's qsl_idx index "
                        "(default: val_map.txt beside the log, as a harness run writes it; else MLPerf's "
                        "50,000-line val_map)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES),
                        help="how the answers were written (MLPerf's reference app: float32)")
    parser.add_argument("--compare", type=Path, metavar="RESULTS_JSON",
                        help="a harness run's results: list the images where the log's answer differs")
    parser.add_argument("--verbose", action="store_true", help="list every image, not the first few")
    args = parser.parse_args(argv)
    limit = None if args.verbose else 10
    try:
        labels_file = args.labels
        if labels_file is None and (args.log.parent / "val_map.txt").is_file():
            labels_file = args.log.parent / "val_map.txt"
        if labels_file is None:
            from preprocessing.dataset import LABELS, imagenet_val_map

            labels_file = LABELS / "val_map.txt"
            labels = list(imagenet_val_map().items())  # checked against its sha256
        else:
            labels = read_labels(labels_file)
        result = score(read_log(args.log), labels, args.dtype, args.log)
        print(result.mlperf_line())
        print(f"labels: {labels_file}; {result.entries} entries, {result.duplicates} duplicates counted once"
              + (f" ({len(result.conflicting)} answered differently the second time: "
                 f"{_names(result.conflicting, labels, limit)})" if result.conflicting else ""),
              file=sys.stderr)
        if result.missing:
            print(f"{len(result.missing)} of the {len(labels)} listed samples are not in the log: "
                  f"{_names(result.missing, labels, limit)}",
                  file=sys.stderr)
        if args.compare:
            try:
                results = json.loads(args.compare.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise LogError(f"{args.compare}: cannot read the results file ({e})") from e
            print_comparison(compare_with_run(result, labels, results, args.compare), args.compare, limit)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def print_comparison(c: dict, results_path: Path, limit: int | None) -> None:
    print(f"compared with {results_path}: {c['compared']} images in both, {c['same_answer']} answered the same")
    titles = {"log_wrong_run_right": "the log gets wrong, the run right",
              "log_right_run_wrong": "the log gets right, the run wrong",
              "both_wrong_differently": "both wrong, differently"}
    for key, title in titles.items():
        rows = c[key]
        print(f"{len(rows)} {title}" + (":" if rows else ""))
        for row in rows[:limit]:
            print(f"  {row['image']}: label {row['label']}, log {row['log']}, run {row['run']}")
        if limit is not None and len(rows) > limit:
            print(f"  ... {len(rows) - limit} more (--verbose lists all)")
    for key, title in (("in_log_not_in_run", "in the log, not in the run"),
                       ("in_run_not_in_log", "in the run, not in the log")):
        if c[key]:
            print(f"{len(c[key])} {title}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
