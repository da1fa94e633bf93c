"""The HTML report (`python -m benchmark.table RUNS... --html`): per model page, every flip shown as
the crops the models saw (read back from the caches and compared with them), closest calls first,
the classes that moved, a reference's disagreements; a missing cache said on the page; and the page
in a real browser (headless Chromium): no console error, every image loads, one figure per flip in
the results, the chart's intervals read back from where they are drawn, a screenshot written."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.evaluation.results import SCHEMA_VERSION, read_results
from benchmark.evaluation.significance import paired_difference_ci
from benchmark.table import main as table_main
from benchmark.testing import browser
from tests.helpers import results_of, run_benchmark, validation_images, varied, write_layout

PIPELINES = ("mlperf", "torchvision", "tf")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fixture_graphs):
    """Three pipelines' runs of a fixture model on 48 synthetic validation images, and a reference=tf
    run. A random-weight model gets nearly nothing right, so the labels are the torchvision
    pipeline's own answers: against MLPerf's pipeline (the baseline) it only fixes images, a
    difference above zero drawn green, while the tf pipeline's run breaks some."""
    tmp = tmp_path_factory.mktemp("report")
    images = validation_images(48)
    root = write_layout(tmp / "flat", "val_map", images)
    graph = fixture_graphs(0.25, 128, read_identities=False)
    common = (f"model.checkpoint={graph}", f"dataset.root={root}", f"cache_dir={tmp / 'cache'}")
    first = run_benchmark(*common, f"results_file={tmp / 'first.json'}")
    assert varied(first["predictions"])
    answers = run_benchmark(*common, "preprocess=torchvision", f"results_file={tmp / 'answers.json'}")["predictions"]
    (root / "val_map.txt").write_text("".join(f"{name} {max(p, 0)}\n" for name, p in zip(first["images"], answers)))
    paths = []
    for pipeline in PIPELINES:
        paths.append(tmp / "runs" / f"{pipeline}.json")
        run_benchmark(*common, f"preprocess={pipeline}", f"results_file={paths[-1]}",
                      *(["reference=tf"] if pipeline == "mlperf" else []))
    return tmp, paths


def flips_in(paths) -> int:
    """Flips of each run against the MLPerf pipeline's, counted from the results' predictions."""
    results = [json.loads(p.read_text()) for p in paths]
    base = next(r for r in results if r["preprocess"]["name"] == "mlperf")
    truth = base["ground_truth"]
    return sum((a == t) != (b == t) for r in results if r is not base
               for a, b, t in zip(base["predictions"], r["predictions"], truth))


def report(tmp, paths, out="t", *extra) -> Path:
    assert table_main([str(p) for p in paths] + ["--out", str(tmp / out), "--html", *extra]) == 0
    (page,) = [p for p in (tmp / out / "report").glob("*.html") if p.name != "index.html"]
    return page


def test_one_figure_per_flip_showing_the_crops_each_model_saw(runs):
    tmp, paths = runs
    page = report(tmp, paths)
    html = page.read_text()
    flips = flips_in(paths)
    # the torchvision run only fixes: its interval lies above zero, drawn green
    (mark,) = re.findall(r'<g class="pair" data-run="torchvision[^"]*"[^>]*>.*?</g>', html, re.S)
    assert 'stroke="#17702a"' in mark and float(re.search(r'data-low="([-0-9.]+)"', mark).group(1)) > 0
    assert flips > 0 and html.count('<figure class="flip') == flips
    assert not re.search(r"(src|href)=\"(https?:|/)", html)  # nothing fetched from elsewhere
    for src in re.findall(r'src="([^"]+)"', html) + re.findall(r'<a href="([^"#][^"]*)"', html):
        assert (page.parent / src).is_file(), src
    # each thumbnail is its image's crop: the cache's, up to JPEG's loss (a wrong index is far off)
    results = {json.loads(p.read_text())["preprocess"]["name"]: json.loads(p.read_text()) for p in paths}
    checked = 0
    for name, pipeline, index in re.findall(r'src="([^"]*crop-([a-z]+)-\d+-[0-9a-f]+-(\d+)\.jpg)"', html):
        index = int(index)
        cache = np.load(Path(results[pipeline]["preprocess"]["cache"]) / "images.npy", mmap_mode="r")
        thumb = np.asarray(Image.open(page.parent / name), np.float64)
        error = np.abs(thumb - np.clip(np.rint(cache[index]), 0, 255)).mean()
        other = np.abs(thumb - np.clip(np.rint(cache[(index + 1) % len(cache)]), 0, 255)).mean()
        assert error < 4 and other > 4 * error, (name, error, other)
        checked += 1
    assert checked >= flips


def test_flips_closest_first_and_classes_counted(runs):
    from benchmark.evaluation.pairs import NEAR_TIE, pair_runs

    _, paths = runs
    pairs, unpaired = pair_runs([read_results(p) for p in paths])
    assert not unpaired and {p.baseline.path.name for p in pairs} == {"mlperf.json"}
    kinds = {p.run.path.name: {f["kind"] for f in p.flips()} for p in pairs}
    assert kinds["torchvision.json"] == {"fixed"} and kinds["tf.json"] == {"broken"}
    for p in pairs:
        flips = p.flips()
        assert len(flips) == p.comparison["fixed"] + p.comparison["broken"]
        for f in flips:  # closeness recomputed from the files' calls
            i, run, base = f["index"], p.run.results.calls, p.baseline.results.calls
            right, wrong = (base, run) if f["kind"] == "broken" else (run, base)
            expected = min(right["top5_prob"][i][0] - right["top5_prob"][i][1],
                           wrong["top5_prob"][i][0] - wrong["label_prob"][i])
            assert f["closeness"] == pytest.approx(expected) and f["near_tie"] == (expected < NEAR_TIE)
        assert [f["closeness"] for f in flips] == sorted(f["closeness"] for f in flips)
        nets = {}
        for f in flips:
            nets[f["label"]] = nets.get(f["label"], 0) + (1 if f["kind"] == "fixed" else -1)
        assert {c["label"]: c["net"] for c in p.classes()} == nets


def test_fewer_thumbnails_when_asked_and_a_gone_cache_said(runs, tmp_path):
    tmp, paths = runs
    from benchmark.evaluation.pairs import pair_runs

    html = report(tmp, paths, "few", "--html-flips", "1").read_text()
    counts = [len(p.flips()) for p in pair_runs([read_results(p) for p in paths])[0]]
    assert html.count('<figure class="flip') == sum(n > 0 for n in counts)  # the closest of each pair's
    assert [int(n) for n in re.findall(r"Showing the 1 closest of (\d+) flips", html)] == [n for n in counts if n > 1]
    # the torchvision run's cache gone: said, its crops left out, the page still whole
    moved = []
    for p in paths:
        r = json.loads(p.read_text())
        if r["preprocess"]["name"] == "torchvision":
            r["preprocess"]["cache"] = str(tmp_path / "deleted-cache")
        moved.append(tmp_path / p.name)
        moved[-1].write_text(json.dumps(r))
    html = report(tmp_path, moved).read_text()
    assert f"Crops of torchvision.json not shown: its crop cache {tmp_path / 'deleted-cache'} is gone" in html
    assert html.count('<figure class="flip') == flips_in(paths)
    assert "crop-torchvision-" not in html and "run's crop not available" in html


def test_the_page_in_a_real_browser(runs):
    if why := browser.missing():
        pytest.skip(f"no browser to test the report in: {why}")
    tmp, paths = runs
    page = report(tmp, paths, "browser")
    shot = tmp / "browser" / "screenshot.png"
    seen = browser.inspect(page, shot)
    assert seen["console_errors"] == [] and seen["broken_images"] == []
    assert seen["flips"] == flips_in(paths) > 0
    assert seen["crops"] >= seen["flips"]  # the baseline's crop in each, the run's where its pipeline differs
    # the chart read back through its axis: each interval where Agresti-Min puts it, to a pixel
    results = {p.name: json.loads(p.read_text()) for p in paths}
    base = results["mlperf.json"]
    assert len(seen["chart"]) == 2
    for mark in seen["chart"]:
        r = results[re.search(r"\((\w+\.json)\)", mark["run"]).group(1)]
        t = base["ground_truth"]
        fixed = sum(a != y and b == y for a, b, y in zip(base["predictions"], r["predictions"], t))
        broken = sum(a == y and b != y for a, b, y in zip(base["predictions"], r["predictions"], t))
        low, high = (100 * v for v in paired_difference_ci(fixed, broken, len(t)))
        for key, value in (("difference", 100 * (fixed - broken) / len(t)), ("low", low), ("high", high)):
            assert abs(mark[key] - value) <= mark["pixel"], (mark, key, value)
    png = Image.open(io.BytesIO(shot.read_bytes()))
    assert png.format == "PNG" and png.size == browser.WINDOW


def test_a_lone_precision_run_is_paired_with_its_exact_model(tmp_path):
    """An int8 run with no other run of its model on its images: paired with the exact fp32 model its
    own run computed (against_exact's calls), the flips counted the right way round."""
    from benchmark.evaluation.pairs import pair_runs

    def calls(top1):
        return {"top5": [[c, 9, 8, 7, 6] for c in top1], "top5_prob": [[0.5, 0.2, 0.1, 0.1, 0.1]] * len(top1),
                "label_prob": [0.5 if c == t else 0.1 for c, t in zip(top1, [1, 2, 3, 4])]}
    run = {"schema_version": SCHEMA_VERSION, "model": "m", "checkpoint": {"path": "/x/g.pb", "member": None, "sha256": "ab" * 32}, "image_size": 224,
           "preprocess": {"name": "mlperf", "interpolation": "linear"}, "backend": "torch", "precision": "int8",
           "images": list("abcd"), "ground_truth": [1, 2, 3, 4], "predictions": [1, 0, 3, 4],
           "calls": calls([1, 0, 3, 4]),
           "against_exact": {"against": "exact", "scores": {"good": 2, "total": 4}, "calls": calls([1, 2, 0, 0])}}
    (pair,), unpaired = pair_runs([results_of(run, tmp_path / "int8.json")])
    assert not unpaired and pair.baseline.label == "exact fp32 of int8.json (same run, same crops)"
    assert (pair.comparison["fixed"], pair.comparison["broken"]) == (2, 1)
    assert {f["image"]: f["kind"] for f in pair.flips()} == {"b": "broken", "c": "fixed", "d": "fixed"}
    del run["against_exact"]
    assert pair_runs([results_of(run, tmp_path / "int8.json")]) == ([], [])  # alone, nothing to pair it with
