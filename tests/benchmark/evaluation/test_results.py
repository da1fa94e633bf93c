"""Results files: every writer stamps its kind and schema version; one reader upgrades every earlier
shape the harness wrote (tests/data/results: one file of each, written before the stamp) and refuses
a newer schema or a kind the command does not read, naming the file."""

import json
from dataclasses import asdict
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
    assert (r.data["schema_version"], r.kind) == (SCHEMA_VERSION, kind)
    assert {k: v for k, v in r.data.items() if k not in ("schema_version", "kind")} == raw
    assert r.facts.model == raw["model"] and r.facts.judged == raw["judged_as"]
    if raw.get("loadgen"):  # the LoadGen block as its record, every key it recorded read
        assert {k: v for k, v in asdict(r.loadgen).items() if v is not None} == \
            {k: v for k, v in raw["loadgen"].items() if v is not None}
    if raw.get("mlperf_target"):
        assert asdict(r.gate) == raw["mlperf_target"]
    if kind == "loadgen-performance":
        assert r.scores is None and r.loadgen.mode == "performance"
    else:
        assert (r.scores.good, r.scores.total, r.scores.top1) == (raw["good"], raw["total"], raw["top1"])


def test_schema_2s_two_comparisons_read_in_the_one_shape():
    """A file of schema 2 (written with precision=bf16 reference=tf: the exact model's scores as
    fp32_* keys, the reference's at the top of its block) reads as two Comparisons of one shape; what
    schema 2 did not record is derived from the file where it can be (the reference's flips from its
    calls and the labels, the exact model's disagreements from its calls), never made up."""
    from dataclasses import fields

    from benchmark.evaluation.results import Comparison
    from benchmark.evaluation.significance import paired

    raw = json.loads((EARLIER / "v2-accuracy.json").read_text())
    assert raw["schema_version"] == 2 and "fp32_good" in raw["against_exact"]
    r = read_results(EARLIER / "v2-accuracy.json")
    names = {f.name for f in fields(Comparison)}
    assert set(r.data["reference"]) == set(r.data["against_exact"]) == names
    ref, exact, was_ref, was_exact = r.reference, r.exact, raw["reference"], raw["against_exact"]
    assert (ref.against, ref.other["backend"], ref.other["version"]) == ("reference", "tf", was_ref["version"])
    assert (ref.scores.good, ref.scores.total, ref.scores.top5) == (was_ref["good"], was_ref["total"], was_ref["top5"])
    assert (ref.agreement, ref.disagreements, ref.calls) == (was_ref["agreement"], was_ref["disagreements"],
                                                           was_ref["calls"])
    theirs = [c[0] for c in was_ref["calls"]["top5"]]
    flips = paired(raw["ground_truth"], theirs, raw["predictions"], raw["images"])
    assert (ref.fixed, ref.broken, ref.mcnemar_p) == (flips["fixed"], flips["broken"], flips["mcnemar_p"])
    assert ref.gate is None and ref.images_per_s == was_ref["timing"]["eval_images_per_s"]
    assert (exact.against, exact.other["numerics"]) == ("exact", was_exact["fp32_numerics"])
    assert (exact.scores.good, exact.scores.total, exact.scores.top5_good) == (was_exact["fp32_good"],
                                                                            was_exact["total"], None)
    assert exact.agreement == was_exact["same_prediction"] and exact.calls == was_exact["fp32_calls"]
    assert len(exact.disagreements) == exact.scores.total - exact.agreement
    assert asdict(exact.gate) == was_exact["mlperf_target"]["fp32"] and exact.images_per_s == was_exact["fp32_images_per_s"]
    assert (exact.fixed, exact.broken, exact.max_abs_logit_diff) == (was_exact["fixed"], was_exact["broken"],
                                                                     was_exact["max_abs_logit_diff"])
    assert Comparison.from_dict(exact.to_dict()) == exact  # the record and its JSON: one shape both ways


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
