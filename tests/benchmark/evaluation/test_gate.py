"""MLPerf's accuracy target: the submission checker's constants and comparison, at the boundary."""

import json

import numpy as np

from benchmark.evaluation.gate import gate
from benchmark.mlperf_log import main


def test_targets_are_the_checkers():
    resnet, mobilenet = gate("resnet50", 76.456, 50_000), gate("mobilenet_v1", 71.676, 50_000)
    assert resnet.target == 76.46 * 0.99 and mobilenet.target == 71.68 * 0.98
    assert resnet.line() == "mlperf target 75.695% (MLPerf's ResNet-50 v1.5: 99% of 76.46): PASS"  # its FP32 result
    assert mobilenet.line() == "mlperf target 70.246% (MLPerf's MobileNet-v1 1.0/224: 98% of 71.68): PASS"
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


def test_a_checkpoint_or_list_not_mlperfs_is_judged_for_reference_only():
    from benchmark.evaluation.gate import reservations

    assert reservations("resnet50", "resnet50_v1.pb", True, None) == ()
    assert reservations("resnet50", "resnet50_v1.pb", True, {"list": "option_1", "mlperf_list": "option_1"}) == ()
    mine = reservations("mobilenet_v1", "mobilenet_v1_0.25_128/frozen_graph.pb", False,
                        {"list": "/x/mine.txt", "mlperf_list": None})
    g = gate("mobilenet_v1", 41.5, 50_000, mine)
    assert g.line() == ("mlperf target 70.246% (MLPerf's MobileNet-v1 1.0/224: 98% of 71.68): FAIL; for reference "
                        "only, not a submission's verdict: mobilenet_v1_0.25_128/frozen_graph.pb is not MLPerf's "
                        "published MobileNet-v1 1.0/224 checkpoint (not fetched from MLPerf's URL, nor of a published "
                        "md5); calibrated on /x/mine.txt, not one of MLPerf's calibration lists")
    assert g.to_dict()["reservations"] == list(mine) and g.to_dict()["model"] == "MobileNet-v1 1.0/224"


def test_mlperfs_checkpoint_is_known_by_url_or_published_md5(tmp_path):
    """A file of a published md5, or fetched from one of the model's MLPerf URLs, is MLPerf's."""
    import hashlib

    from benchmark.formats.checkpoint import Checkpoint
    from benchmark.runtimes.source import ModelSpec
    from benchmark.runtimes.source import is_mlperfs as mlperfs
    from tests.helpers import config

    def is_mlperfs(model, ckpt):
        return mlperfs(ModelSpec.from_config(model), ckpt)

    path = tmp_path / "resnet50_v1.pb"
    path.write_bytes(b"a graph")
    ckpt = Checkpoint(path, hashlib.sha256(b"a graph").hexdigest(), None, b"")
    model = config("model=resnet50", f"model.checkpoint={path}").model
    assert not is_mlperfs(model, ckpt)  # named like MLPerf's, but not its bytes
    published = config("model=resnet50", f"model.checkpoint={path}",
                       f"model.published_md5=[{hashlib.md5(b'a graph').hexdigest()}]").model
    assert is_mlperfs(published, ckpt)
    assert is_mlperfs(config("model=mobilenet_v1").model, ckpt)  # the URL it names by default
    assert is_mlperfs(config("model=resnet50", "model.checkpoint=${model.onnx_urls.opset11}").model, ckpt)


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
        "mlperf target 75.695% (MLPerf's ResNet-50 v1.5: 99% of 76.46): FAIL (indicative: 4 images, not the 50,000 "
        "the target is judged on)"]
    assert main([str(log)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "mlperf target: not judged (give --model mobilenet_v1 or resnet50)"
