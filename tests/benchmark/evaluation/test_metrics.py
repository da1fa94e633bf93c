"""The metrics' descriptors (evaluation/metrics.py): expected calibration error computed as defined,
recorded by a run, shown in the tables and the report, and computed for a file written before it."""

import csv
import re
from pathlib import Path

import pytest

from benchmark.evaluation.metrics import METRICS, expected_calibration_error
from tests.helpers import run_benchmark, validation_images, write_layout

EARLIER = Path(__file__).resolve().parents[2] / "data" / "results"


def test_expected_calibration_error_by_hand():
    """Four images: two answered with 0.95 (one right), one with 0.55 (right), one skipped; bins of
    width 1/15: 0.95 in bin 14, 0.55 in bin 8. ECE = 2/3 |0.5 - 0.95| + 1/3 |1 - 0.55| = 0.45."""
    calls = {"top5_prob": [[0.95, 0.01, 0, 0, 0], [0.95, 0.02, 0, 0, 0], [0.55, 0.3, 0, 0, 0], None]}
    r = {"predictions": [3, 4, 5, None], "ground_truth": [3, 9, 5, 1], "calls": calls}
    assert expected_calibration_error(r) == pytest.approx(45.0)
    perfect = {"predictions": [1, 2], "ground_truth": [1, 2], "calls": {"top5_prob": [[1.0] + [0] * 4] * 2}}
    assert expected_calibration_error(perfect) == 0.0  # a probability of 1 in the last bin
    assert expected_calibration_error({"predictions": [1], "ground_truth": [1]}) is None  # no calls recorded


def test_a_run_records_every_metric_and_the_tables_and_report_show_them(fixture_graphs, tmp_path):
    from benchmark.table import main as table_main

    root = write_layout(tmp_path / "val", "val_map", validation_images(12))
    r = run_benchmark(f"model.checkpoint={fixture_graphs(0.25, 96, read_identities=False)}", f"dataset.root={root}",
                      f"cache_dir={tmp_path / 'cache'}", f"results_file={tmp_path / 'runs' / 'r.json'}")
    assert set(r["metrics"]) == {m.name for m in METRICS}
    assert (r["metrics"]["top1"], r["metrics"]["top5"]) == (r["top1"], r["top5"])
    assert r["metrics"]["ece"] == expected_calibration_error(r) > 0  # random weights: far from calibrated
    assert table_main([str(tmp_path / "runs" / "r.json"), str(EARLIER / "v1-accuracy.json"), "--out",
                       str(tmp_path / "t"), "--html", "--backend", "all"]) == 0
    rows = {row["file"]: row for row in csv.DictReader((tmp_path / "t" / "runs.csv").open())}
    assert rows["r.json"]["ece"] == f"{r['metrics']['ece']:.3f}"
    import json

    older = json.loads((EARLIER / "v1-accuracy.json").read_text())
    assert "metrics" not in older and rows["v1-accuracy.json"]["ece"] == f"{expected_calibration_error(older):.3f}"
    pages = "".join(p.read_text() for p in (tmp_path / "t" / "report").glob("*.html"))
    assert "calibration error (ECE, top-1, 15 bins)" in pages
    assert "ReaL top-1" not in pages and "ImageNet-ReaL: not scored" in pages  # asked by no run: no column
    assert r["metrics"]["real_top1"] is None and rows["r.json"]["real_top1"] == ""
    assert re.search(rf"<td[^>]*>{r['metrics']['ece']:.3f}</td>", pages)
