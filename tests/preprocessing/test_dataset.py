"""Labels file parsing and dataset checks: every problem is an error naming the file and line."""

import pytest

from preprocessing.dataset import DatasetError, load_dataset


def make(tmp_path, lines: str, files=()):
    root = tmp_path / "val"
    root.mkdir()
    for f in files:
        (root / f).write_bytes(b"x")
    (root / "val_map.txt").write_text(lines, encoding="utf-8")
    return root


def test_reads_val_map_in_order_with_limit(tmp_path):
    root = make(tmp_path, "b.JPEG 3\na.JPEG 999\nwith space.JPEG 0\n", ["a.JPEG", "b.JPEG", "with space.JPEG"])
    ds = load_dataset(root)
    assert ds.names == ["b.JPEG", "a.JPEG", "with space.JPEG"] and ds.labels == [3, 999, 0]
    assert load_dataset(root, limit=2).names == ["b.JPEG", "a.JPEG"]


@pytest.mark.parametrize("line,message", [
    ("a.JPEG\n", "expected '<file> <label>'"),
    ("a.JPEG x\n", "is not an integer"),
    ("a.JPEG 1000\n", "outside 0..999"),
    ("a.JPEG -1\n", "outside 0..999"),
    ("a.JPEG 1\na.JPEG 2\n", "listed twice"),
])
def test_bad_labels_lines(tmp_path, line, message):
    root = make(tmp_path, line, ["a.JPEG"])
    with pytest.raises(DatasetError, match=message) as e:
        load_dataset(root)
    assert "val_map.txt:" in str(e.value)


def test_missing_image_is_named(tmp_path):
    root = make(tmp_path, "a.JPEG 1\ngone.JPEG 2\n", ["a.JPEG"])
    with pytest.raises(DatasetError, match="gone.JPEG"):
        load_dataset(root)


def test_missing_folder_and_labels(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder or archive not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="labels.txt: labels file not found"):
        load_dataset(tmp_path, labels=tmp_path / "labels.txt")


@pytest.mark.parametrize("name", ["/etc/hosts", "../outside/ILSVRC2012_val_00000001.JPEG", "val/../../x.JPEG"])
def test_labels_file_names_stay_inside_the_root(tmp_path, name):
    """A labels file names images relative to dataset.root: one that climbs out of it (or is
    absolute) would score a file the user did not point the harness at."""
    root = tmp_path / "val"
    root.mkdir()
    (root / "labels.txt").write_text(f"{name} 3\n")
    with pytest.raises(DatasetError, match=r"labels.txt:1: .* points outside dataset.root"):
        load_dataset(root, root / "labels.txt", allow_missing=True)
