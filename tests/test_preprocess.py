"""MLPerf's preprocessing, bit for bit: golden crop digests and the float normalisation."""

import hashlib

import numpy as np
import pytest
import torch

from benchmark.evaluate import model_input
from benchmark.normalize import apply_table, lookup_table, mlperf_mobilenet
from preprocessing.pipelines import crop, make_settings


@pytest.mark.slow
@pytest.mark.parametrize("golden_key,interpolation", [("mlperf_mobilenet", "linear"),
                                                      ("mlperf_resnet50", "area")])
def test_mlperf_crops_match_golden_digests(samples_dir, golden, golden_key, interpolation):
    settings = make_settings("mlperf", 224, interpolation)
    wrong = [name for name, digests in golden.items()
             if hashlib.sha256(crop(samples_dir / name, settings).tobytes()).hexdigest() != digests[golden_key]]
    assert len(golden) == 1000
    assert wrong == [], f"{len(wrong)} crops differ from MLPerf's, e.g. {wrong[:3]}"


def test_golden_check_can_fail(samples_dir, golden):
    """The wrong interpolation gives other crops: the digest comparison is not vacuous."""
    name = sorted(golden)[0]
    area = crop(samples_dir / name, make_settings("mlperf", 224, "area"))
    assert hashlib.sha256(area.tobytes()).hexdigest() != golden[name]["mlperf_mobilenet"]


def test_crop_is_floor_centred_short_side_resize(tmp_path):
    import cv2

    img = np.zeros((300, 450, 3), np.uint8)  # h < w: short side 300 -> 256, long side int(256*450/300)=384
    img[:, :, 2] = np.arange(450, dtype=np.uint8)[None, :] % 251  # red ramp along x, stored BGR
    path = tmp_path / "ramp.png"
    cv2.imwrite(str(path), img)
    out = crop(path, make_settings("mlperf", 224, "linear"))
    resized = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (384, 256), interpolation=cv2.INTER_LINEAR)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, resized[16:240, 80:304])  # int((384-224)/2) = 80


def test_normalisation_table_is_mlperf_arithmetic_for_every_value():
    table = lookup_table("mobilenet")
    values = np.arange(256, dtype=np.uint8).reshape(1, 256, 1).repeat(3, axis=2)
    assert apply_table(table, values[None])[0].tobytes() == mlperf_mobilenet(values).tobytes()


def test_normalised_crops_equal_mlperf_float_arrays_bit_for_bit():
    from conftest import crops

    images = crops(8, 224)
    table = lookup_table("mobilenet")
    expected = np.stack([mlperf_mobilenet(im) for im in images])  # MLPerf's own float arrays
    assert apply_table(table, images).tobytes() == expected.tobytes()
    x = model_input(torch.from_numpy(table), torch.from_numpy(images))
    assert x.shape == (8, 3, 224, 224)
    assert x.permute(0, 2, 3, 1).contiguous().numpy().tobytes() == expected.tobytes()
