"""Evaluation across processes with torch.distributed: every image exactly once, in order, and the
same accuracy line and predictions as one process."""

import json
import subprocess
import sys

import numpy as np
import pytest

from benchmark.evaluation.distributed import World
from tests.helpers import ENV, run_benchmark, validation_images, varied, write_layout


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shares_cover_every_image_once(size):
    for n in range(12):
        covered = [i for rank in range(size) for i in range(n)[World(rank, size).share(n)]]
        assert covered == list(range(n))  # in order, none twice, none left out (no padding)


def test_torchrun_gives_one_processs_answers(fixture_graphs, tmp_path):
    """World sizes 2 and 3 (gloo, CPU) against one process: the same accuracy line, the same
    predictions, one results file; the fault guarded: a share evaluated twice or gathered out of order."""
    root = write_layout(tmp_path / "val", "val_map", validation_images(23))  # 23: shares of unequal size
    common = [f"model.checkpoint={fixture_graphs(0.25, 96, read_identities=False)}", f"dataset.root={root}",
              f"cache_dir={tmp_path / 'cache'}", "threads=1", "progress=false", "batch_size=4"]
    single = run_benchmark(*common, f"results_file={tmp_path / 'single.json'}")
    assert varied(single["predictions"])
    for size in (2, 3):
        out = tmp_path / f"world{size}"
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={size}", "-m", "benchmark", *common,
                               f"results_file={out / 'r.json'}"], cwd=tmp_path, env=ENV, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.splitlines()[0] == single["accuracy_line"]
        assert proc.stdout.count("accuracy=") == 1  # rank 0 alone prints
        r = json.loads((out / "r.json").read_text())
        assert list(out.iterdir()) == [out / "r.json"]
        assert r["predictions"] == single["predictions"] and r["distributed"] == {"world_size": size,
                                                                                 "backend": "gloo"}
        assert r["total"] == 23 and np.isfinite(r["timing"]["all_ranks_images_per_s"])
