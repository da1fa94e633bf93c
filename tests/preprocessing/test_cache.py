"""The crop cache: complete, keyed by every pixel-changing setting, never stale, never partial."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from preprocessing.cache import open_cache
from preprocessing.dataset import load_dataset
from preprocessing.pipelines import crop, make_settings
from tests.helpers import synthetic_images


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "val"
    root.mkdir()
    lines = []
    for i, img in enumerate(synthetic_images(40, 300)):
        name = f"img {i:03d}'é.JPEG"  # spaces, quotes and non-ASCII survive the round trip
        h, w = 300 - 3 * i, 300 + 5 * i  # varied aspect ratios
        cv2.imwrite(str(root / name), cv2.resize(img, (w, h)))
        lines.append(f"{name} {i * 7}")
    (root / "val_map.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_dataset(root)


def test_cache_holds_the_pipeline_crops_in_order(dataset, tmp_path):
    settings = make_settings("mlperf", 96, "linear")
    cache = open_cache(dataset, settings, tmp_path / "cache", workers=2, progress=False)
    assert cache.images.shape == (40, 96, 96, 3) and cache.images.dtype == np.uint8
    for i in (0, 17, 39):
        np.testing.assert_array_equal(cache.images[i], crop(dataset.path(i), settings))
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    assert manifest["files"] == dataset.names and manifest["labels"] == dataset.labels
    assert manifest["pipeline"] == settings.to_dict() and manifest["versions"]["opencv"] == cv2.__version__


def test_parallel_and_serial_builds_are_identical(dataset, tmp_path):
    """workers=N: N cropping threads, one OpenCV thread each; the process keeps its OpenCV threads."""
    settings = make_settings("mlperf", 64, "area")
    threads = cv2.getNumThreads()
    a = open_cache(dataset, settings, tmp_path / "a", workers=1, progress=False)
    for workers in (2, 3):
        b = open_cache(dataset, settings, tmp_path / f"b{workers}", workers=workers, progress=False)
        assert a.images.tobytes() == b.images.tobytes()
    assert cv2.getNumThreads() == threads


def test_reuse_and_separation(dataset, tmp_path):
    settings = make_settings("mlperf", 64, "linear")
    first = open_cache(dataset, settings, tmp_path, workers=1, progress=False)
    stamp = os.stat(first.folder / "images.npy").st_mtime_ns
    again = open_cache(dataset, settings, tmp_path, workers=1, progress=False)
    assert again.folder == first.folder
    assert os.stat(again.folder / "images.npy").st_mtime_ns == stamp  # reused, not rebuilt
    for changed in (make_settings("mlperf", 64, "area"), make_settings("mlperf", 72, "linear"),
                    make_settings("mlperf", 64, "linear", crop_percent=80.0)):
        assert open_cache(dataset, changed, tmp_path, workers=1, progress=False).folder != first.folder
    subset = load_dataset(dataset.root, limit=10)
    assert open_cache(subset, settings, tmp_path, workers=1, progress=False).folder != first.folder


def test_changed_source_image_rebuilds(dataset, tmp_path, capsys):
    settings = make_settings("mlperf", 64, "linear")
    before = np.array(open_cache(dataset, settings, tmp_path, workers=1, progress=False).images[3])
    path = Path(dataset.path(3))
    cv2.imwrite(str(path), np.full((80, 90, 3), 200, np.uint8))
    cache = open_cache(dataset, settings, tmp_path, workers=1, progress=False)
    assert "stale" in capsys.readouterr().err
    assert not np.array_equal(cache.images[3], before)
    np.testing.assert_array_equal(cache.images[3], crop(path, settings))


def test_unfinished_build_is_never_read(dataset, tmp_path):
    settings = make_settings("mlperf", 64, "linear")
    cache = open_cache(dataset, settings, tmp_path, workers=1, progress=False)
    expected = np.array(cache.images)
    (cache.folder / "manifest.json").unlink()  # as if killed before the manifest was written
    with open(cache.folder / "images.npy", "r+b") as f:
        f.seek(-1000, os.SEEK_END)
        f.write(b"\0" * 1000)
    rebuilt = open_cache(dataset, settings, tmp_path, workers=1, progress=False)
    assert rebuilt.images.tobytes() == expected.tobytes()


def test_manifest_cut_short_by_a_crash_rebuilds(dataset, tmp_path, capsys):
    settings = make_settings("mlperf", 64, "linear")
    cache = open_cache(dataset, settings, tmp_path, workers=1, progress=False)
    expected = np.array(cache.images)
    manifest = cache.folder / "manifest.json"
    manifest.write_text(manifest.read_text()[:100])
    rebuilt = open_cache(dataset, settings, tmp_path, workers=1, progress=False)
    assert "manifest is unreadable" in capsys.readouterr().err
    assert rebuilt.images.tobytes() == expected.tobytes()
    assert json.loads(manifest.read_text())["count"] == 40


def test_undecodable_image_names_the_file(dataset, tmp_path):
    from preprocessing.pipelines import ImageError

    Path(dataset.path(5)).write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="img 005"):
        open_cache(dataset, make_settings("mlperf", 64, "linear"), tmp_path, workers=2, progress=False)
    assert not list((tmp_path / "crops").glob("*/manifest.json"))


def test_image_unreadable_at_build_is_tried_again(dataset, tmp_path, monkeypatch, capsys):
    """An image that failed to read during a skip-mode build (a transient I/O error, a permission
    fixed since: neither changes its size or mtime) is read again on the next open, and the cache
    is rebuilt with it instead of leaving it out of every later run."""
    from preprocessing.dataset import Folder
    from preprocessing.pipelines import ImageError

    settings = make_settings("mlperf", 64, "linear")
    real_read = Folder.read
    flaky = dataset.names[3]

    def failing_once(self, name):
        if name == flaky:
            raise ImageError(f"{self.path(name)}: cannot read the file (Input/output error)")
        return real_read(self, name)

    monkeypatch.setattr(Folder, "read", failing_once)
    first = open_cache(dataset, settings, tmp_path / "cache", workers=1, progress=False, on_error="skip")
    assert list(first.failed) == [3]
    monkeypatch.setattr(Folder, "read", real_read)  # the file reads again, unchanged on disk
    again = open_cache(dataset, settings, tmp_path / "cache", workers=1, progress=False, on_error="skip")
    assert "could not be read when the cache was built but reads now" in capsys.readouterr().err
    assert again.failed == {} and np.array_equal(again.images[3], crop(dataset.path(3), settings))
    # with on_error=stop the now readable image is no longer refused either
    assert open_cache(dataset, settings, tmp_path / "cache", workers=1, progress=False).failed == {}
