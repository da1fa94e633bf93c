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
    """World size 2 on 23 images with a user's module against the exact conversion, 3 on 2 (one rank
    with no image) with a transform, gloo on the CPU, against one process: the same accuracy line, the
    same predictions and comparisons, one results file; the faults guarded: a share evaluated twice or
    gathered out of order, and a crash after the work on an empty share."""
    from safetensors.torch import save_file

    from benchmark.convert import load_converted
    from benchmark.formats.checkpoint import open_checkpoint
    from tests.ports import mobilenet_v1_state

    pb = fixture_graphs(0.25, 96, read_identities=False)
    save_file(mobilenet_v1_state(load_converted("mobilenet_v1", open_checkpoint(pb), None, None)[0].state_dict()),
              str(tmp_path / "port.safetensors"))
    module = ["model=module", "model.ports=mobilenet_v1", "model.image_size=96", f"reference_checkpoint={pb}",
              "model.module={_target_:tests.ports.MobileNetV1Port,multiplier:0.25}", "reference=torch",
              f"model.checkpoint={tmp_path / 'port.safetensors'}"]
    root = write_layout(tmp_path / "val", "val_map", validation_images(23))  # 23: shares of unequal size
    common = [f"model.checkpoint={pb}", f"dataset.root={root}",
              f"cache_dir={tmp_path / 'cache'}", "threads=1", "progress=false", "batch_size=4"]
    for size, n in ((2, 23), (3, 2)):
        # the first a user's module (its reference gathered too), the second with a user's transform:
        # each rank transforms its copy, the comparison is gathered
        limit = [f"dataset.limit={n}"] + (["model.transform=tests.transforms:bf16_weights"] if size == 3 else module)
        single = run_benchmark(*common, *limit, f"results_file={tmp_path / f'single{n}.json'}")
        assert n < 23 or varied(single["predictions"])
        out = tmp_path / f"world{size}"
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={size}", "-m", "benchmark", *common, *limit,
                               f"results_file={out / 'r.json'}"], cwd=tmp_path, env=ENV, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.splitlines()[0] == single["accuracy_line"]
        assert [line.startswith("accuracy=") for line in proc.stdout.splitlines()].count(True) == 1  # rank 0 alone
        r = json.loads((out / "r.json").read_text())
        assert list(out.iterdir()) == [out / "r.json"]
        assert r["predictions"] == single["predictions"] and r["distributed"] == {"world_size": size,
                                                                                 "backend": "gloo"}
        assert r["total"] == n and np.isfinite(r["timing"]["all_ranks_images_per_s"])
        if size == 2:
            assert r["conversion"]["module"]["target"] == "tests.ports:MobileNetV1Port"
            assert r["reference"]["agreement"] == 23 and r["reference"]["other"]["backend"] == "torch"
            speed = ("timing", "images_per_s")
            assert {k: v for k, v in r["reference"].items() if k not in speed} == \
                {k: v for k, v in single["reference"].items() if k not in speed}
        if size == 3:
            assert r["transform"]["target"] == "tests.transforms:bf16_weights"
            # the same comparison; speeds differ, and rank 0 (no image here) ran no forward to read flags in
            differ = ("images_per_s", "timing", "other")
            assert {k: v for k, v in r["against_exact"].items() if k not in differ} == \
                {k: v for k, v in single["against_exact"].items() if k not in differ}
