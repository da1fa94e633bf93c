"""Sweeps with Hydra's multirun, shared caches, and the published tables."""

import csv
import json
import subprocess
import sys

import pytest

from benchmark.table import main as table_main
from tests.helpers import ENV, slim_graph


@pytest.mark.slow
def test_parallel_sweep_shares_caches_and_tables_match_runs(samples_dir, tmp_path):
    graph = slim_graph(128, "tgz")
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark", "-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2",
         f"hydra.sweep.dir={tmp_path / 'multirun'}", f"model.checkpoint={graph}",
         f"dataset.root={samples_dir}", "dataset.limit=48", f"cache_dir={cache}", "threads=1", "workers=1",
         "progress=false", "preprocess=mlperf,torchvision,tf", "backend=torch,tf"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "results" / "runs").glob("*.json"))]
    assert len(runs) == 6
    folders = {r["preprocess"]["name"]: r["preprocess"]["cache"] for r in runs}
    assert len(set(folders.values())) == 3 == len(list((cache / "crops").glob("*/manifest.json")))
    for name in folders:  # torch and tf runs of one pipeline read the same cache and agree
        pair = [r for r in runs if r["preprocess"]["name"] == name]
        assert pair[0]["preprocess"]["cache"] == pair[1]["preprocess"]["cache"]
        assert pair[0]["predictions"] == pair[1]["predictions"]

    out = tmp_path / "tables"
    assert table_main([*map(str, sorted((tmp_path / "results" / "runs").glob("*.json"))), "--out", str(out)]) == 0
    with open(out / "pivot.csv") as f:
        pivot = list(csv.reader(f))
    header, [cells] = pivot[0], pivot[1:]
    for r in runs:
        if r["backend"] == "torch":
            column = next(i for i, h in enumerate(header) if h.startswith(r["preprocess"]["name"] + " "))
            assert cells[column] == f"{r['top1']:.3f} ({r['good']}/{r['total']})"
    assert (out / "top1.png").stat().st_size > 1000 and (out / "top1.svg").read_text().startswith("<?xml")
    assert "tf linear" in (out / "pivot.md").read_text()
    paired = [line.split(" | ") for line in (out / "paired.md").read_text().splitlines() if line.startswith("| mobilenet_v1")]
    base = next(r for r in runs if r["backend"] == "torch" and r["preprocess"]["name"] == "mlperf")
    for r in runs:
        if r["backend"] == "torch" and r is not base:  # each torch run against MLPerf's pipeline
            right = [p == t for p, t in zip(r["predictions"], r["ground_truth"])]
            base_right = [p == t for p, t in zip(base["predictions"], base["ground_truth"])]
            (row,) = [p for p in paired if p[1].startswith(r["preprocess"]["name"] + " ")]
            assert row[2].startswith("mlperf linear, torch (") and row[3] == "48"
            assert int(row[6]) == sum(a and not b for a, b in zip(right, base_right))
            assert int(row[7]) == sum(b and not a for a, b in zip(right, base_right))


def test_paired_table_counts_flips_against_mlperfs_pipeline(tmp_path):
    """Three runs on the same four images: each against the MLPerf-pipeline run; the fault this
    guards: flips counted the wrong way round or against the wrong baseline."""
    truth = [1, 2, 3, 4]
    base = {"model": "m", "checkpoint": {"path": "/x/g.pb", "member": None, "sha256": "ab" * 32},
            "image_size": 224, "backend": "torch", "device": "cpu", "top5": 0.0, "total": 4,
            "versions": {"opencv": "5", "pillow": "13", "torch": "2"}, "images": ["a", "b", "c", "d"],
            "ground_truth": truth}
    runs = {"z-mlperf": ("mlperf", [1, 2, 0, 0]), "a-pil": ("torchvision", [1, 0, 3, 4]),
            "b-bf16": ("mlperf", [1, 2, 3, None])}  # None: an image that run skipped
    paths = []
    for name, (pipeline, predictions) in runs.items():
        good = sum(p == t for p, t in zip(predictions, truth))
        # MLPerf's pipeline is told by its settings, not its name: torchvision's as its config has them
        settings = {"decoder": "pil", "resize": "torchvision", "crop_rounding": "round"} if pipeline == "torchvision" else {}
        run = {**base, "preprocess": {"name": pipeline, "interpolation": "linear", **settings}, "predictions": predictions,
               "top1": 25.0 * good, "good": good, **({"precision": {"precision": "bf16"}} if "bf16" in name else {})}
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(run))
    assert table_main([str(p) for p in paths] + ["--out", str(tmp_path / "t"), "--backend", "all"]) == 0
    rows = [line.rstrip(" |").split(" | ") for line in (tmp_path / "t" / "paired.md").read_text().splitlines()
            if line.startswith("| m ")]
    by = {r[1].split(" (")[0]: r for r in rows}
    assert set(by) == {"torchvision linear, torch", "mlperf linear, torch, bf16"}
    assert all(r[2] == "mlperf linear, torch (z-mlperf.json)" for r in rows)
    assert by["torchvision linear, torch"][3:9] == ["4", "75.000", "50.000", "2", "1", "1"]  # p = 2*(1+3)/8, capped
    assert by["mlperf linear, torch, bf16"][3:9] == ["3", "100.000", "66.667", "1", "0", "1"]  # 2*1/2, capped
    # a baseline written before results held labels: said, not silently left out
    old = json.loads(paths[0].read_text())
    del old["ground_truth"]
    paths[0].write_text(json.dumps(old))
    assert table_main([str(p) for p in paths] + ["--out", str(tmp_path / "t2"), "--backend", "all"]) == 0
    text = (tmp_path / "t2" / "paired.md").read_text()
    assert text.count("Not paired: ") == 2 and "z-mlperf.json: its results hold no ground_truth" in text


def test_a_run_on_other_images_is_said_not_paired(tmp_path):
    """A run whose image list no other run of its model shares (another dataset.limit) gets a
    'Not paired' line, not silence; runs sharing a list are still paired."""
    base = {"model": "m", "checkpoint": {"path": "/x/g.pb", "member": None, "sha256": "ab" * 32},
            "image_size": 224, "backend": "torch", "device": "cpu", "top5": 0.0,
            "versions": {"opencv": "5", "pillow": "13", "torch": "2"}}
    runs = {"a-mlperf": ("mlperf", 4), "b-pil": ("torchvision", 4), "c-tf": ("tf", 3)}  # c: dataset.limit=3
    paths = []
    for name, (pipeline, n) in runs.items():
        run = {**base, "preprocess": {"name": pipeline, "interpolation": "linear"}, "images": list("abcd")[:n],
               "ground_truth": [1] * n, "predictions": [1] * n, "total": n, "good": n, "top1": 100.0}
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(run))
    assert table_main([str(p) for p in paths] + ["--out", str(tmp_path / "t")]) == 0
    text = (tmp_path / "t" / "paired.md").read_text()
    assert [line.split(" | ")[1] for line in text.splitlines() if line.startswith("| m ")] == \
        ["torchvision linear, torch (b-pil.json)"]
    assert "Not paired: c-tf.json: no other run of m" in text and "same 3 images" in text


def test_two_runs_for_one_cell_is_an_error(tmp_path):
    run = {"model": "m", "checkpoint": {"path": "/x/g.pb", "member": None, "sha256": "ab" * 32},
           "image_size": 224, "preprocess": {"name": "mlperf", "interpolation": "linear"},
           "backend": "torch", "device": "cpu", "top1": 50.0, "top5": 70.0, "good": 1, "total": 2,
           "versions": {"opencv": "5", "pillow": "13", "torch": "2"}}
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(run))
    assert table_main([str(p) for p in paths] + ["--out", str(tmp_path / "t")]) == 2


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_module

    with initialize_config_module("benchmark.conf", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.cpus_per_task == 8 and launcher.timeout_min == 240


@pytest.mark.slow
def test_submitit_local_sweep_runs_each_job(fixture_graphs, tmp_path):
    """Hydra's submitit launcher with its local executor: the path a SLURM sweep takes, on one
    machine. Each job writes its results; they match the same runs made directly."""
    from tests.helpers import run_benchmark, validation_images, write_layout

    root = write_layout(tmp_path / "val", "val_map", validation_images(8))
    common = [f"model.checkpoint={fixture_graphs(0.25, 96, read_identities=False)}", f"dataset.root={root}",
              f"cache_dir={tmp_path / 'cache'}", "threads=1", "workers=1", "progress=false"]
    proc = subprocess.run([sys.executable, "-m", "benchmark", "-m", "hydra/launcher=submitit_local",
                           f"hydra.sweep.dir={tmp_path / 'multirun'}", "hydra.launcher.timeout_min=10",
                           *common, "preprocess=mlperf,torchvision"], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r["preprocess"]["name"]: r for r in
            (json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*.json"))}
    assert set(runs) == {"mlperf", "torchvision"}
    assert list((tmp_path / "multirun" / ".submitit").iterdir())  # the jobs went through submitit
    direct = run_benchmark(*common, "preprocess=torchvision", f"results_file={tmp_path / 'direct.json'}")
    assert runs["torchvision"]["predictions"] == direct["predictions"]
