"""The benchmark command runs and reports ratios against its baselines (timings are never asserted)."""

import importlib

from conftest import SAMPLES, SLIM_2017, need


def test_bench_reports_ratios_and_exactness(tmp_path, capsys):
    need(SAMPLES)
    graph = need(SLIM_2017 / "mobilenet_v1_0.25_224" / "frozen_graph.pb")  # the bench crops at 224
    bench = importlib.import_module("benchmark.bench.__main__")
    out = tmp_path / "bench.md"
    assert bench.main(["--images", "24", "--mobilenet", str(graph), "--repeats", "1", "--out", str(out)]) == 0
    report = out.read_text()
    assert "| normalised inputs bit-identical | yes |" in report
    assert "4.00x smaller" in report  # uint8 against float32
    assert "| 24/24 |" in report  # torch and TF agree on every image
    assert report.strip() in capsys.readouterr().out
