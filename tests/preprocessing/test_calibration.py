"""MLPerf's calibration lists: shipped unchanged, one list only, and only listed images used."""

import hashlib

import pytest

from preprocessing.calibration import CalibrationError, calibration_dataset, mlperf_list, read_list, select
from preprocessing.dataset import load_dataset
from tests.helpers import SHARED, has

MLPERF_SHA256 = {"option_1": "7662247d1d9407d6cb564268f64c5a4a6cf9f1a34fd2e6cdc3b94dcf278b3dc9",
                 "option_2": "11ce810122226ec0ca8c56e47ee356e3c1185f3c6ce8262edb50c3c1d0a9705e"}


def test_shipped_lists_are_mlperfs():
    for option, digest in MLPERF_SHA256.items():
        cal = mlperf_list(option)
        assert cal.sha256 == digest and len(cal.names) == len(set(cal.names)) == 500 and cal.mlperf == option
        assert all(n.startswith("ILSVRC2012_val_") and n.endswith(".JPEG") for n in cal.names)
    assert len(set(mlperf_list("option_1").names) & set(mlperf_list("option_2").names)) == 4  # shared by both
    shared = SHARED / "mlperf-calibration"
    if has(shared):  # the copy in the shared data, as taken from MLPerf's repository
        for option, digest in MLPERF_SHA256.items():
            assert hashlib.sha256((shared / f"cal_image_list_{option}.txt").read_bytes()).hexdigest() == digest


def test_a_file_equal_to_an_mlperf_list_is_that_list(tmp_path):
    names = mlperf_list("option_2").names
    path = tmp_path / "mine.txt"
    path.write_text("\n".join(reversed(names)) + "\n")  # other order, names only
    assert read_list(str(path)).mlperf == "option_2"
    subset = tmp_path / "some.txt"
    subset.write_text("\n".join(names[:10]) + "\n")
    assert read_list(str(subset)).mlperf is None and len(read_list(str(subset)).names) == 10


def test_changed_mlperf_list_is_refused(tmp_path):
    path = tmp_path / "cal_image_list_option_1.txt"
    path.write_text("\n".join(mlperf_list("option_1").names[:-1]) + "\nILSVRC2012_val_00000001.JPEG\n")
    with pytest.raises(CalibrationError, match="named like MLPerf's cal_image_list_option_1.txt but its sha256"):
        read_list(str(path))


def test_a_users_file_with_names_of_both_lists_is_read_with_a_note(tmp_path):
    """Not MLPerf's list either way: read, recorded as no MLPerf list, with a note naming the counts."""
    path = tmp_path / "mixed.txt"
    one, two = mlperf_list("option_1").names, mlperf_list("option_2").names
    path.write_text("\n".join([n for n in one if n not in two][:250] + [n for n in two if n not in one][:3]))
    cal = read_list(str(path))
    assert cal.mlperf is None and len(cal.names) == 253
    assert "holds names of both of MLPerf's calibration lists (250 only in option_1, 3 only in option_2)" in cal.note
    path.write_text("\n".join(list(one[:100]) + [n for n in two if n in one]))  # the shared names mix nothing
    assert read_list(str(path)).mlperf is None and read_list(str(path)).note is None


def test_unknown_list_and_empty_file(tmp_path):
    with pytest.raises(CalibrationError, match="calibration=option_3: neither option_1 nor option_2 nor a file"):
        read_list("option_3")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(CalibrationError, match="names no image"):
        read_list(str(tmp_path / "empty.txt"))


def val_folder(tmp_path, names):
    root = tmp_path / "val"
    root.mkdir()
    for n in names:
        (root / n).write_bytes(b"\xff\xd8 not decoded here \xff\xd9")
    return load_dataset(root)  # labels from MLPerf's val_map by validation name


def test_only_listed_images_are_selected_and_missing_ones_named(tmp_path):
    listed = mlperf_list("option_1").names
    present = list(listed[:5]) + ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    dataset = val_folder(tmp_path, [n for n in present if n not in listed[:5]] + list(listed[:5]))
    cal = read_list("option_1")
    with pytest.raises(CalibrationError, match=r"495 of its 500 images are not in the dataset .* 5 found, 500 needed"):
        select(dataset, cal)
    subset, missing = calibration_dataset(dataset, cal, min_images=5)
    assert subset.names == list(listed[:5])  # the list's order, never an unlisted image
    assert len(missing) == 495 and missing[0] == listed[5]
    assert subset.labels == [dataset.labels[dataset.names.index(n)] for n in subset.names]
