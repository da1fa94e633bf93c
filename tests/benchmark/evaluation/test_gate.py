"""MLPerf's accuracy target: the submission checker's constants and comparison, at the boundary."""

import json

import numpy as np

from benchmark.evaluation.gate import gate
from benchmark.mlperf_log import main


def test_targets_are_the_checkers():
    resnet, mobilenet = gate("resnet50", 76.456, 50_000), gate("mobilenet_v1", 71.676, 50_000)
    assert resnet.target == 76.46 * 0.99 and mobilenet.target == 71.68 * 0.98
    assert resnet.line() == "mlperf target 75.695% (99% of 76.46): PASS"  # MLPerf's own FP32 result
    assert mobilenet.line() == "mlperf target 70.246% (98% of 71.68): PASS"
    assert gate("vgg16", 70.0, 50_000) is None  # no ImageNet target in MLPerf


def test_boundary_images():
    """The checker compares the printed three-decimal accuracy with 76.46 * 0.99 = 75.6954: 37,848 of
    50,000 (75.696 %) meets it, 37,847 (75.694 %) does not; MobileNet's 70.2464: 35,124 / 35,123."""
    for arch, just, short in (("resnet50", 37_848, 37_847), ("mobilenet_v1", 35_124, 35_123)):
        assert gate(arch, 100 * just / 50_000, 50_000).passed
        assert not gate(arch, 100 * short / 50_000, 50_000).passed
    # The checker reads the printed accuracy back: a top-1 of 75.6954 itself prints 75.695 and fails
    assert not gate("resnet50", 75.6954, 50_000).passed and gate("resnet50", 75.6956, 50_000).passed


def test_fewer_images_is_indicative():
    g = gate("resnet50", 80.0, 1_000)
    assert g.passed and g.indicative
    assert g.line().endswith("PASS (indicative: 1,000 images, not the 50,000 the target is judged on)")
    assert g.to_dict()["indicative"] and not gate("resnet50", 80.0, 50_000).indicative


def test_mlperf_log_states_the_target(tmp_path, capsys):
    labels = [(f"ILSVRC2012_val_{i + 1:08d}.JPEG", i % 1000) for i in range(4)]
    entries = [{"seq_id": 0, "qsl_idx": i, "data": np.array([i % 1000 if i else 5], np.float32).tobytes().hex()}
               for i in range(4)]  # 3 of 4 right
    (tmp_path / "val_map.txt").write_text("".join(f"{n} {c}\n" for n, c in labels))
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(json.dumps(entries))
    assert main([str(log), "--model", "resnet50"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "accuracy=75.000%, good=3, total=4",
        "mlperf target 75.695% (99% of 76.46): FAIL (indicative: 4 images, not the 50,000 the target is judged on)"]
    assert main([str(log)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "mlperf target: not judged (give --model mobilenet_v1 or resnet50)"
