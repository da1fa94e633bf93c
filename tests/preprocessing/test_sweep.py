"""A sweep's caches in one pass: each image read, hashed and decoded once per decoder, every cache
bit for bit what it is built alone; Hydra's multirun builds them before its first job."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from preprocessing import cache as cache_module
from preprocessing import pipelines
from preprocessing.cache import open_cache, open_caches
from preprocessing.dataset import load_dataset
from preprocessing.pipelines import make_settings
from preprocessing.sweep import job_overrides
from tests.helpers import ENV, synthetic_images

OPENCV = [make_settings("mlperf", 64, "linear"), make_settings("mlperf", 64, "area"),
          make_settings("mlperf", 48, "cubic", crop_percent=75.0)]
PIL = make_settings("torchvision", 64, "linear", decoder="pil", resize="pil", crop_rounding="round")


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "val"
    root.mkdir()
    lines = []
    for i, img in enumerate(synthetic_images(12, 120)):
        cv2.imwrite(str(root / f"{i}.JPEG"), cv2.resize(img, (120 + 9 * i, 120)))
        lines.append(f"{i}.JPEG {i}")
    (root / "val_map.txt").write_text("\n".join(lines) + "\n")
    return load_dataset(root)


def test_one_pass_builds_each_cache_as_alone(dataset, tmp_path, monkeypatch):
    decodes, reads = [], []
    decode, read = pipelines.decode_rgb, type(dataset).read
    monkeypatch.setattr(cache_module, "decode_rgb", lambda data, path, decoder: decodes.append(decoder) or
                        decode(data, path, decoder))
    monkeypatch.setattr(type(dataset), "read", lambda self, i: reads.append(i) or read(self, i))
    together = open_caches(dataset, [*OPENCV, PIL, OPENCV[0]], tmp_path / "together", workers=2, progress=False,
                           verify="sha256")
    # every file read once, decoded once by OpenCV and once by Pillow, for five pipelines (one twice)
    assert sorted(reads) == list(range(12))
    assert sorted(decodes) == sorted(["opencv"] * 12 + ["pil"] * 12)
    assert together[0].folder == together[4].folder
    monkeypatch.undo()
    for settings, built in zip([*OPENCV, PIL], together):
        alone = open_cache(dataset, settings, tmp_path / "alone", workers=1, progress=False, verify="sha256")
        assert built.images.tobytes() == alone.images.tobytes()
        a, b = (json.loads((c.folder / "manifest.json").read_text()) for c in (built, alone))
        assert a["sha256"] == [dataset.sha256(i) for i in range(len(dataset))]
        assert a["key"] == b["key"] and a["sha256"] == b["sha256"] and a["pipeline"] == b["pipeline"]
    # built: opened again, nothing is rebuilt
    stamps = [(c.folder / "images.npy").stat().st_mtime_ns for c in together]
    again = open_caches(dataset, [*OPENCV, PIL], tmp_path / "together", progress=False)
    assert [(c.folder / "images.npy").stat().st_mtime_ns for c in again] == stamps[:4]


def test_only_the_missing_and_stale_are_built(dataset, tmp_path, capsys):
    first = open_cache(dataset, OPENCV[0], tmp_path, progress=False)
    stamp = (first.folder / "images.npy").stat().st_mtime_ns
    capsys.readouterr()
    both = open_caches(dataset, OPENCV[:2], tmp_path, progress=False)
    assert (both[0].folder / "images.npy").stat().st_mtime_ns == stamp
    assert capsys.readouterr().err.count("building preprocessing cache") == 1


def test_an_unreadable_image_fails_each_pipeline_or_is_skipped_in_each(dataset, tmp_path):
    (dataset.root / "3.JPEG").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(pipelines.ImageError, match="3.JPEG"):
        open_caches(dataset, [OPENCV[0], PIL], tmp_path / "stop", progress=False)
    assert not list((tmp_path / "stop").rglob("images.npy*"))  # no partial file left, none read as whole
    skipped = open_caches(dataset, [OPENCV[0], PIL], tmp_path / "skip", progress=False, on_error="skip")
    for c in skipped:
        assert list(c.failed) == [3] and not c.images[3].any()
    assert "OpenCV" in skipped[0].failed[3] and "Pillow" in skipped[1].failed[3]


def test_job_overrides_expand_as_hydras_sweeper():
    jobs = job_overrides(["preprocess=mlperf,torchvision", "model.image_size=224", "x=1,2"])
    assert jobs == [["preprocess=mlperf", "model.image_size=224", "x=1"],
                    ["preprocess=mlperf", "model.image_size=224", "x=2"],
                    ["preprocess=torchvision", "model.image_size=224", "x=1"],
                    ["preprocess=torchvision", "model.image_size=224", "x=2"]]


def test_a_multirun_builds_its_caches_in_one_pass_before_its_jobs(dataset, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "preprocessing", "-m", "preprocess=mlperf,torchvision",
                           "preprocess.interpolation=linear,area", "model.image_size=64",
                           f"dataset.root={dataset.root}",
                           f"cache_dir={tmp_path}", "progress=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    # four pipelines (Pillow's area filter is its box filter), two decoders
    assert "sweep: the crop caches of 4 pipeline(s) on 12 images, in one pass (2 decode(s) per image)" in err
    assert err.count("building preprocessing cache") == 4
    assert err.index("sweep:") < err.index("building") and err.rindex("building") < err.index(" MB\n")  # jobs after
    folders = [line for line in proc.stdout.splitlines() if "/crops/" in line]
    assert len(folders) == 4 and len(set(folders)) == 4
    for folder in folders:
        np.load(f"{folder}/images.npy", mmap_mode="r")
