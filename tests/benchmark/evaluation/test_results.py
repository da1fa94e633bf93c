"""Results files: every writer stamps its kind and schema version; one reader upgrades every earlier
shape the harness wrote (tests/data/results: one file of each, written before the stamp) and refuses
a newer schema or a kind the command does not read, naming the file."""

import json
from pathlib import Path

import pytest

from benchmark.evaluation.results import SCHEMA_VERSION, ResultsError, read_results

EARLIER = Path(__file__).resolve().parents[2] / "data" / "results"


@pytest.mark.parametrize("name,kind", [("v1-accuracy.json", "accuracy"), ("v1-loadgen-accuracy.json", "loadgen-accuracy"),
                                       ("v1-loadgen-performance.json", "loadgen-performance")])
def test_every_earlier_shape_reads(name, kind):
    raw = json.loads((EARLIER / name).read_text())
    assert "kind" not in raw and "schema_version" not in raw  # as it was written
    r = read_results(EARLIER / name, kinds=(kind,))
    assert (r["schema_version"], r["kind"]) == (SCHEMA_VERSION, kind)
    assert {k: v for k, v in r.items() if k not in ("schema_version", "kind")} == raw


def test_a_command_refuses_the_wrong_kind_and_a_newer_schema(tmp_path, capsys):
    """benchmark.table given a LoadGen performance run's file: a one-line error naming it (the fault: a
    KeyError traceback); a file of a newer schema: refused, not half read."""
    from benchmark.table import main as table_main

    performance = EARLIER / "v1-loadgen-performance.json"
    assert table_main([str(EARLIER / "v1-accuracy.json"), str(performance), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {performance}: a LoadGen performance run's results (its speed: no prediction); "
                   "benchmark.table reads an accuracy run's results (python -m benchmark) or a LoadGen accuracy "
                   "run's results\n")
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**json.loads((EARLIER / "v1-accuracy.json").read_text()),
                                 "schema_version": SCHEMA_VERSION + 1, "kind": "accuracy"}))
    with pytest.raises(ResultsError, match=f"results of schema version {SCHEMA_VERSION + 1}, newer than"):
        read_results(newer)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ResultsError, match="not a results file of the harness"):
        read_results(tmp_path / "list.json")
    # the earlier files still make tables (each alone: both are runs of one model and pipeline)
    for name in ("v1-accuracy.json", "v1-loadgen-accuracy.json"):
        assert table_main([str(EARLIER / name), "--out", str(tmp_path / name)]) == 0
