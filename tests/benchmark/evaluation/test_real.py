"""ImageNet-ReaL: the shipped label sets are the published file; a run with labels.real=true, and an
MLPerf accuracy log with --real, are scored against them as Beyer et al. define it (empty sets left
out and counted, a prediction right when in the set), checked by hand and against real.json read here."""

import json
from pathlib import Path

import pytest

from benchmark.evaluation import real
from benchmark.mlperf_log import main as mlperf_log
from preprocessing import dataset as ds
from tests.helpers import SHARED, has, run_benchmark, validation_images, write_layout

REAL_JSON = SHARED / "reassessed-imagenet" / "real.json"


def val(i: int) -> str:
    return f"ILSVRC2012_val_{i:08d}.JPEG"


def test_shipped_sets_are_the_published_file():
    sets = real.real_sets()
    assert len(sets) == 50_000 and sum(not s for s in sets) == 3_163  # as its README says
    # the first ten, read by eye from real.json: [[], [970, 795], [230, 231], [809], [516, 850], ...]
    assert sets[:10] == tuple(map(frozenset, ([], [970, 795], [230, 231], [809], [516, 850], [57], [334],
                                              [700], [674], [332])))
    assert (ds.LABELS / "real.json").stat().st_size == 388_478
    if has(REAL_JSON):  # the copy beside the checkout, from the same commit
        assert (ds.LABELS / "real.json").read_bytes() == REAL_JSON.read_bytes()


def test_scored_by_hand():
    # MLPerf's labels of images 1..10: 65, 970, 230, 809, 516, 57, 334, 415, 674, 332
    best = [[65, 1, 2, 3, 4],       # 1: empty ReaL set: left out
            [795, 970, 1, 2, 3],    # 2: 795 is in {970, 795}: right under ReaL (wrong under val_map)
            [231, 0, 1, 2, 3],      # 3: right
            [1, 2, 3, 4, 809],      # 4: wrong; its top-5 holds 809
            [850, 0, 1, 2, 3],      # 5: right
            [0, 1, 2, 3, 4],        # 6: wrong, top-5 wrong
            None,                   # 7: not scored (skipped as unreadable)
            [415, 700, 1, 2, 3],    # 8: val_map's 415 is not ReaL's {700}: wrong; top-5 right
            [674, 1, 2, 3, 4],      # 9: right
            [-1, 332, 1, 2, 3]]     # 10: background: wrong; top-5 right
    r = real.score([f"some/folder/{val(i)}" for i in range(1, 11)], best)
    assert (r["good"], r["top5_good"], r["total"], r["empty_sets_left_out"]) == (4, 7, 8, 1)
    assert r["top1"] == 50.0 and r["top5"] == 87.5 and r["label_set"] == "ImageNet-ReaL"
    assert real.line(r) == ("real: accuracy=50.000%, good=4, total=8, top5=87.500% "
                            "(1 images with an empty ReaL set left out)")
    one = real.score([val(i) for i in range(2, 6)], [[795], [230], [1], [516]])  # top-1 answers only
    assert (one["good"], one["total"], one["top5"], one["top5_good"]) == (3, 4, None, None)
    assert "top5" not in real.line(one)


@pytest.mark.parametrize("name", ["n01440764_tench.JPEG", "ILSVRC2012_val_00050001.JPEG",
                                  "ILSVRC2012_val_00000000.JPEG", "ILSVRC2012_val_1.JPEG"])
def test_other_names_are_refused(name):
    with pytest.raises(real.RealError, match=f"labels.real=true: '{name}' is not an ImageNet validation image"):
        real.check([val(1), name])


def test_damaged_shipped_sets_are_an_error(tmp_path, monkeypatch):
    damaged = tmp_path / "labels"
    damaged.mkdir()
    (damaged / "real.json").write_text((ds.LABELS / "real.json").read_text().replace("[970, 795]", "[970]", 1))
    monkeypatch.setattr(ds, "LABELS", damaged)
    real.real_sets.cache_clear()
    try:
        with pytest.raises(ds.DatasetError, match="real.json: sha256 .* reinstall"):
            real.real_sets()
    finally:
        real.real_sets.cache_clear()


def test_a_run_scored_against_real(tmp_path, fixture_graphs, capsys):
    """labels.real=true end to end: ReaL top-1 and top-5 from the run's own calls, recomputed here
    from the published file's text; the line on stderr; the original labels' scores unchanged."""
    images = validation_images(40)
    root = write_layout(tmp_path / "flat", "flat", images)
    graph = fixture_graphs(0.25, 128, read_identities=False)
    common = (f"model.checkpoint={graph}", f"dataset.root={root}", f"cache_dir={tmp_path / 'cache'}")
    r = run_benchmark(*common, "labels.real=true", f"results_file={tmp_path / 'real.json'}")
    plain = run_benchmark(*common, f"results_file={tmp_path / 'plain.json'}")
    assert plain["real"] is None and plain["accuracy_line"] == r["accuracy_line"]
    sets = json.loads((ds.LABELS / "real.json").read_text())
    good = good5 = total = empty = 0
    for name, top5 in zip(r["images"], r["calls"]["top5"]):
        labels = sets[int(name[len("ILSVRC2012_val_"):-len(".JPEG")]) - 1]
        if not labels:
            empty += 1
            continue
        total, good, good5 = total + 1, good + (top5[0] in labels), good5 + bool(set(top5) & set(labels))
    assert r["predictions"] == [c[0] for c in r["calls"]["top5"]]  # the calls are the run's answers
    assert (r["real"]["good"], r["real"]["top5_good"], r["real"]["total"]) == (good, good5, total)
    assert r["real"]["empty_sets_left_out"] == empty and total + empty == 40
    assert f"real: accuracy={100 * good / total:.3f}%, good={good}, total={total}" in capsys.readouterr().err


def test_other_images_refused_before_any_is_read(tmp_path, fixture_graphs):
    root = write_layout(tmp_path / "flat", "val_map", [("n01440764_tench.JPEG", 0, b"not read")])
    with pytest.raises(real.RealError, match="'n01440764_tench.JPEG' is not an ImageNet validation image"):
        run_benchmark(f"model.checkpoint={fixture_graphs(0.25, 128, read_identities=False)}",
                      f"dataset.root={root}", f"cache_dir={tmp_path / 'cache'}", "labels.real=true")
    assert not (tmp_path / "cache" / "crops").exists()


def test_accuracy_log_scored_against_real(tmp_path, capsys):
    from tests.benchmark.evaluation.test_accuracy_log import LABELS, entry, write

    # ReaL: 0 empty set; 1: 795 right (val_map wrong); 2: 231 right (val_map: 230); 3 wrong; 7: 415 wrong (val_map right)
    log = write(tmp_path, [entry(0, 65), entry(1, 795), entry(2, 231), entry(3, 1), entry(7, 415)])
    assert mlperf_log([str(log), "--real"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "accuracy=40.000%, good=2, total=5"  # val_map: 0 and 7 right
    assert "real: accuracy=50.000%, good=2, total=4 (1 images with an empty ReaL set left out)" in out
    assert Path(log).parent.joinpath("val_map.txt").read_text().startswith(LABELS[0][0])


def test_tables_carry_real_where_scored(tmp_path):
    """runs.csv's ReaL columns and pivot.md's cell: the run's ReaL scores, empty for a run without."""
    import csv

    from benchmark.table import main as table_main

    base = {"model": "m", "checkpoint": {"path": "/x/g.pb", "member": None, "sha256": "ab" * 32}, "image_size": 224,
            "backend": "torch", "device": "cpu", "top1": 50.0, "top5": 75.0, "good": 2, "total": 4,
            "versions": {"opencv": "5", "pillow": "13", "torch": "2"}, "images": list("abcd"),
            "dataset": {"label_set": "ILSVRC2012"}}
    scored = {**base, "preprocess": {"name": "mlperf", "interpolation": "linear"},
              "real": {"top1": 66.66666, "top5": 100.0, "total": 3, "good": 2}}
    plain = {**base, "preprocess": {"name": "tf", "interpolation": "linear"}, "real": None}
    for name, r in (("scored", scored), ("plain", plain)):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    assert table_main([str(tmp_path / "scored.json"), str(tmp_path / "plain.json"), "--out", str(tmp_path / "t")]) == 0
    rows = {r["file"]: r for r in csv.DictReader((tmp_path / "t" / "runs.csv").open())}
    assert [rows["scored.json"][k] for k in ("real_top1", "real_top5", "real_total", "label_set")] == \
        ["66.667", "100.000", "3", "ILSVRC2012"]
    assert [rows["plain.json"][k] for k in ("real_top1", "real_top5", "real_total")] == ["", "", ""]
    assert "| 50.000 (2/4; ReaL 66.667) | 50.000 (2/4) |" in (tmp_path / "t" / "pivot.md").read_text()
