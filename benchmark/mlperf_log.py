"""python -m benchmark.mlperf_log mlperf_log_accuracy.json [--labels val_map.txt]
    [--dtype float32|int32|int64] [--model resnet50|mobilenet_v1] [--compare RESULTS_JSON] [--real] [--verbose]

Scores MLPerf's accuracy log as MLPerf's `tools/accuracy-imagenet.py` does (evaluation/accuracy_log.py),
judges it against MLPerf's accuracy target for the model (given, or the compared run's) and, with
--compare, lists the images where a harness run answered otherwise; --real also scores its answers
against ImageNet-ReaL's label sets (top-1: the log holds one answer per image)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmark.evaluation.accuracy_log import DTYPES, LogError, compare_with_run, read_labels, read_log, score
from benchmark.evaluation.gate import gate
from benchmark.families import with_target
from preprocessing.errors import UserError


def _names(indices: list[int], labels, limit: int | None) -> str:
    shown = ", ".join(labels[i][0] for i in indices[:limit])
    return shown + (f", ... ({len(indices) - limit} more)" if limit is not None and len(indices) > limit else "")


def check_whole_set(entries: list, labels: list, log: Path, compare: Path | None) -> None:
    """MLPerf's 50,000-line val_map indexes a log only of a run over the whole validation set in its
    order: the qsl_idx of a run over a subset index that run's own list (a harness run writes it
    beside the log), and read against MLPerf's they point at other images."""
    samples = {e.get("qsl_idx") for e in entries if isinstance(e, dict)}
    if len(samples) != len(labels):
        raise LogError(f"{log}: the log answers {len(samples)} samples, not the {len(labels):,} of MLPerf's "
                       f"val_map.txt: its qsl_idx index the run's own list; give it with --labels")
    if compare is not None:
        try:
            images = json.loads(Path(compare).read_text()).get("images")
        except (OSError, json.JSONDecodeError, AttributeError):
            return  # read (and reported) with the comparison
        if images is not None and len(images) != len(labels):
            raise LogError(f"{compare}: the run listed {len(images)} images, not MLPerf's {len(labels):,}: "
                           f"give its val_map.txt with --labels")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.mlperf_log", description="Scores MLPerf's accuracy log as MLPerf's accuracy-imagenet.py does.")
    parser.add_argument("log", type=Path, help="mlperf_log_accuracy.json")
    parser.add_argument("--labels", type=Path, help="val_map.txt whose lines the log's qsl_idx index "
                        "(default: val_map.txt beside the log, as a harness run writes it; else MLPerf's "
                        "50,000-line val_map)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="how the answers were written (MLPerf's reference app: float32); auto: the "
                             "first type under which every answer is a class")
    parser.add_argument("--compare", type=Path, metavar="RESULTS_JSON",
                        help="a harness run's results: list the images where the log's answer differs")
    parser.add_argument("--model", choices=with_target(),
                        help="the model the log answers for, for MLPerf's accuracy target (default: the "
                             "--compare run's model)")
    parser.add_argument("--real", action="store_true",
                        help="also score the answers against ImageNet-ReaL's reassessed label sets")
    parser.add_argument("--verbose", action="store_true", help="list every image, not the first few")
    args = parser.parse_args(argv)
    limit = None if args.verbose else 10
    try:
        labels_file = args.labels
        if labels_file is None and (args.log.parent / "val_map.txt").is_file():
            labels_file = args.log.parent / "val_map.txt"
        entries = read_log(args.log)
        if labels_file is None:
            from preprocessing.dataset import LABELS, imagenet_val_map

            labels_file = LABELS / "val_map.txt"
            labels = list(imagenet_val_map().items())  # checked against its sha256
            check_whole_set(entries, labels, args.log, args.compare)
        else:
            labels = read_labels(labels_file)
        result = score(entries, labels, args.dtype, args.log)
        results = None
        if args.compare:
            from benchmark.evaluation.results import read_results

            results = read_results(args.compare, command="mlperf_log --compare")
        print(result.mlperf_line())
        # the run's model is judged as the family whose target applies: a user's module (arch "module")
        # as the one it ports (judged_as), with the run's reservations (a checkpoint, calibration list
        # or module not MLPerf's) kept
        ran = results.facts.judged if results else None
        arch = args.model or ran
        caveats = tuple(results.gate.reservations) if results and results.gate and arch == ran else ()
        target = gate(arch, result.top1, result.total, caveats) if arch else None
        print(target.line() if target else "mlperf target: not judged (give --model "
              + " or ".join(with_target()) + ")")
        print(f"labels: {labels_file}; {result.entries} entries ({result.dtype}), "
              f"{result.duplicates} duplicates counted once"
              + (f" ({len(result.conflicting)} answered differently the second time: "
                 f"{_names(result.conflicting, labels, limit)})" if result.conflicting else ""),
              file=sys.stderr)
        if args.real:
            from benchmark.evaluation import real

            answered = sorted(result.answers)
            print(real.line(real.score([labels[i][0] for i in answered], [[result.answers[i]] for i in answered])))
        if result.missing:
            print(f"{len(result.missing)} of the {len(labels)} listed samples are not in the log: "
                  f"{_names(result.missing, labels, limit)}",
                  file=sys.stderr)
        if args.compare:
            print_comparison(compare_with_run(result, labels, results), args.compare, limit)
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
