"""model=module: a user's own torch.nn.Module with its own weights, run under MLPerf's preprocessing
and judged image by image against the exact conversion of the MLPerf checkpoint it ports
(reference=torch) or that graph in TensorFlow (reference=tf)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from benchmark.formats.checkpoint import CheckpointError
from preprocessing.errors import ConfigError
from tests import ports
from tests.helpers import config, run_benchmark, setup_run, validation_images, varied, write_layout

SIZE = 128  # MobileNet-v1 0.25 at 128: a port checked in seconds


@pytest.fixture(scope="module")
def mobilenet(fixture_graphs, tmp_path_factory):
    """The fixture graph, its export, and the hand port's weights renamed from that export."""
    from benchmark.convert import load_converted
    from benchmark.export import export
    from benchmark.formats.checkpoint import open_checkpoint
    from benchmark.nn.layers import fold_batch_norms

    folder = tmp_path_factory.mktemp("port")
    pb = fixture_graphs(0.25, SIZE)
    ckpt = open_checkpoint(pb)
    model, _ = load_converted("mobilenet_v1", ckpt, None, None)
    export(model, "mobilenet_v1", ckpt, folder / "exact.safetensors", {})
    exact = {k: v for k, v in model.state_dict().items()}
    save_file(ports.mobilenet_v1_state(exact), str(folder / "port.safetensors"))
    folded = fold_batch_norms(copy.deepcopy(model)).state_dict()
    save_file(ports.mobilenet_v1_state(folded), str(folder / "folded.safetensors"))
    torch.save({"state_dict": ports.mobilenet_v1_state(exact)}, folder / "port.pt")
    root = write_layout(tmp_path_factory.mktemp("val"), "val_map", validation_images(24))
    common = ["model=module", "model.ports=mobilenet_v1", f"model.image_size={SIZE}", f"dataset.root={root}",
              f"cache_dir={tmp_path_factory.mktemp('cache')}", f"reference_checkpoint={pb}"]
    return {"pb": pb, "folder": folder, "common": common}


def port_args(m, weights="port.safetensors", **kwargs):
    arguments = "".join(f",{k}:{v}" for k, v in kwargs.items())
    target = "{_target_:tests.ports.MobileNetV1Port,multiplier:0.25" + arguments + "}"
    return [*m["common"], f"model.module={target}", f"model.checkpoint={m['folder'] / weights}"]


def test_a_faithful_port_agrees_with_the_exact_conversion_on_every_image(mobilenet, tmp_path, capsys):
    exact = run_benchmark("model=mobilenet_v1", f"model.checkpoint={mobilenet['pb']}", *mobilenet["common"][3:5],
                          f"results_file={tmp_path / 'e.json'}")
    capsys.readouterr()
    r = run_benchmark(*port_args(mobilenet), "reference=torch", f"results_file={tmp_path / 'r.json'}")
    ref = r["reference"]
    assert varied(r["predictions"]) and r["predictions"] == exact["predictions"]
    assert (ref["agreement"], ref["scores"]["total"], ref["other"]["backend"]) == (24, 24, "torch")
    assert 0 < ref["max_abs_logit_diff"] < 1e-3  # BatchNorm2d's arithmetic, not TF's: float32 noise
    assert ref["other"]["checkpoint"]["path"] == str(mobilenet["pb"]) and ref["other"]["checkpoint"]["model"] == "mobilenet_v1"
    assert r["arch"] == "module" and r["judged_as"] == "mobilenet_v1"
    assert r["fold_bn"] is False and exact["fold_bn"] is True  # the module's batch norms are its own
    assert ref["other"]["cpu_fusion"] == r["cpu_fusion"] == "graph"  # how the exact conversion ran, recorded
    assert r["conversion"]["module"]["target"] == "tests.ports:MobileNetV1Port"
    assert r["conversion"]["module"]["kwargs"] == {"multiplier": 0.25}
    assert r["preprocess"]["interpolation"] == "linear" and r["normalization"] == "mobilenet"  # the ported model's
    out = capsys.readouterr().out.splitlines()
    assert out[0] == exact["accuracy_line"]
    assert "MLPerf's MobileNet-v1 1.0/224" in out[1]
    assert "the model is your module tests.ports:MobileNetV1Port" in out[1]
    from benchmark.table import main as table_main  # a module's runs are a model of their own in the tables

    assert table_main([str(tmp_path / "r.json"), str(tmp_path / "e.json"), "--out", str(tmp_path / "t")]) == 0
    pivot = (tmp_path / "t" / "pivot.md").read_text()
    assert "| module tests.ports:MobileNetV1Port (port.safetensors, 128px) |" in pivot and "| mobilenet_v1 (" in pivot
    # the same weights as a .pt state dict read weights-only; the reference as the graph in TensorFlow
    r = run_benchmark(*port_args(mobilenet, "port.pt"), "reference=tf", f"results_file={tmp_path / 't.json'}")
    assert r["predictions"] == exact["predictions"] and r["reference"]["agreement"] == 24


def test_loadgen_accuracy_runs_the_module(mobilenet, tmp_path):
    """MLPerf's LoadGen (Offline, accuracy mode) answers with the module: the direct run's predictions,
    under the ported model's name in LoadGen's settings."""
    from benchmark.loadgen.run import run as loadgen_run

    out = tmp_path / "lg"
    loadgen_run(config(*port_args(mobilenet), "loadgen.scenario=Offline", "loadgen.mode=accuracy",
                       f"loadgen.output_dir={out}", name="loadgen"))
    accuracy = json.loads((out / "results.json").read_text())
    direct = run_benchmark(*port_args(mobilenet), f"results_file={tmp_path / 'direct.json'}")
    assert accuracy["predictions"] == direct["predictions"] and accuracy["accuracy_line"] == direct["accuracy_line"]
    assert accuracy["conversion"]["module"]["target"] == "tests.ports:MobileNetV1Port"


def test_a_padding_slip_moves_the_logits(mobilenet, tmp_path, capsys):
    """Its disagreements are real ones, not near-ties: the margin of a near-tie is numerical noise,
    never the slip's own logit difference."""
    capsys.readouterr()
    r = run_benchmark(*port_args(mobilenet, slip=1), "reference=torch", f"results_file={tmp_path / 'r.json'}")
    ref = r["reference"]
    assert ref["max_abs_logit_diff"] > 1e-2 and ref["agreement"] < 24
    assert ref["near_ties"] == sum(m <= ref["near_tie_margin"] for m in ref["disagreement_margins"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("reference torch:")]
    assert f"(none of the {24 - ref['agreement']} differing is a near-tie, the reference's margin under 0.0002" in line


def test_bad_modules_and_weights_are_named(mobilenet, tmp_path):
    def fails(*overrides):
        return setup_run(*port_args(mobilenet), *overrides)

    with pytest.raises(ConfigError, match="model.module is not set: the factory of your module"):
        setup_run(*[o for o in port_args(mobilenet) if not o.startswith("model.module=")])
    with pytest.raises(ConfigError, match="model.module=tests.ports:Nothing: tests.ports has no callable Nothing"):
        fails("model.module=tests.ports:Nothing")
    with pytest.raises(CheckpointError, match="port.safetensors: does not fit model.module=tests.ports:MobileNetV1"):
        fails("model.module={_target_:tests.ports.MobileNetV1Port,multiplier:0.5}")
    pickled = tmp_path / "code.pt"
    torch.save({"state_dict": ports.MobileNetV1Port(0.25).state_dict(), "object": object()}, pickled)
    with pytest.raises(CheckpointError, match="code.pt: not a readable weights file"):
        fails(f"model.checkpoint={pickled}")  # weights_only: an arbitrary object is refused, never unpickled
    with pytest.raises(CheckpointError, match="model=module takes the module's weights"):
        fails(f"model.checkpoint={mobilenet['pb']}")
    with pytest.raises(ConfigError, match="model.ports=vgg: a module ports one of MLPerf's models"):
        fails("model.ports=vgg")
    with pytest.raises(ConfigError, match="model=module runs your module in PyTorch: backend=torch"):
        fails("backend=tf")
    with pytest.raises(ConfigError, match="cpu_fusion=true fuses a model by its family's rule"):
        fails("cpu_fusion=true")
    with pytest.raises(ConfigError, match="precision=int8 with model=module"):
        fails("precision=int8")
    with pytest.raises(ConfigError, match="reference_checkpoint= names the MLPerf checkpoint a model=module ports"):
        setup_run(f"model.checkpoint={mobilenet['pb']}", f"reference_checkpoint={mobilenet['pb']}")
    with pytest.raises(ConfigError, match="reference=torch is the exact conversion a model=module is compared with"):
        setup_run(f"model.checkpoint={mobilenet['pb']}", "reference=torch")


def compare_report(*overrides, tmp_path) -> dict:
    from benchmark.compare import compare

    return compare(config(*overrides, "dataset.limit=4", f"compare_file={tmp_path / 'cmp.json'}", name="compare"))


def test_compare_finds_a_faithful_port_equal_and_names_the_slip(mobilenet, tmp_path, capsys):
    """The port's names are its own: its layers are paired by execution order, kind and shape."""
    right = compare_report(*port_args(mobilenet), tmp_path=tmp_path)
    assert right["first_divergence"] is None and right["matched_by"] == "execution order, kind and shape"
    rows = right["layers"]
    assert len(rows) == 1 + 27 * 3 + 1  # the inputs, each conv, batch norm and ReLU6, the logits
    assert (rows[1]["module"], rows[1]["tensor"]) == ("stem.1", "features.conv2d_0.conv")
    assert (rows[-1]["module"], rows[-1]["tensor"]) == ("(output)", "(output)")
    assert max(r["max_rel_diff"] for r in rows) < 5e-5  # the tolerance's reason: 1.4e-5 measured
    slipped = compare_report(*port_args(mobilenet, slip=1), tmp_path=tmp_path)
    assert slipped["first_divergence"] == "blocks.1.0.1"
    (row,) = [r for r in slipped["layers"] if r["over"]][:1]
    assert row["tensor"] == "features.conv2d_2_depthwise.conv" and row["max_rel_diff"] > 1e-2
    assert "first departure at blocks.1.0.1 (the exact model's features.conv2d_2_depthwise.conv)" \
        in capsys.readouterr().out


def test_compare_finds_a_folded_port_equal(mobilenet, tmp_path):
    """A port whose batch norms are folded into its convolutions: each conv paired with the folded
    exact model's (the fault: against the unfolded model, "first departure at stem.1", a conv without
    its batch norm, although every later layer agrees)."""
    report = compare_report(*port_args(mobilenet, "folded.safetensors", folded="true"), tmp_path=tmp_path)
    assert report["first_divergence"] is None and report["exact_folded"] is True
    rows = report["layers"]
    assert len(rows) == 1 + 27 * 2 + 1 and max(r["max_rel_diff"] for r in rows) < 5e-5  # conv, ReLU6
    assert compare_report(*port_args(mobilenet), tmp_path=tmp_path)["exact_folded"] is False


def test_compare_transforms_the_model_the_run_transforms(mobilenet, tmp_path):
    """Noise scaled by a layer's weights' spread: the folded model's weights (the run's, fold_bn=true)
    are not the unfolded ones, so compare hands the transform the folded model too; its logits'
    difference from the exact model is the run's on the same images."""
    common = ["model=mobilenet_v1", f"model.checkpoint={mobilenet['pb']}", *mobilenet["common"][3:5],
              "model.transform={_target_:tests.transforms.noise,layer:features.conv2d_3_depthwise.conv,sigma:0.5}"]
    run = run_benchmark(*common, "dataset.limit=4", "cpu_fusion=false", f"results_file={tmp_path / 'r.json'}")
    report = compare_report(*common, tmp_path=tmp_path)
    assert report["layers"][-1]["max_abs_diff"] == pytest.approx(run["against_exact"]["max_abs_logit_diff"], rel=1e-4)
    assert report["exact_folded"] is True


def test_compare_names_the_layer_a_transform_changed(mobilenet, tmp_path):
    common = ["model=mobilenet_v1", f"model.checkpoint={mobilenet['pb']}", *mobilenet["common"][3:5]]
    same = compare_report(*common, "model.transform=tests.transforms:identity", tmp_path=tmp_path)
    assert same["matched_by"] == "name" and same["first_divergence"] is None
    assert all(r["max_abs_diff"] == 0 for r in same["layers"])
    layer = "features.conv2d_3_depthwise.conv"
    noisy = compare_report(*common, f"model.transform={{_target_:tests.transforms.noise,layer:{layer},sigma:0.5}}",
                           tmp_path=tmp_path)
    assert noisy["first_divergence"] == layer and noisy["transform"]["kwargs"]["layer"] == layer


@pytest.fixture(scope="module")
def torchvision_resnet(resnet_graphs, tmp_path_factory):
    """Stock torchvision ResNet-50 weights from the harness's torchvision export of the ResNet-50 fixture."""
    from benchmark.convert import load_converted
    from benchmark.export import torchvision_state_dict
    from benchmark.formats.checkpoint import open_checkpoint

    pb = resnet_graphs()
    model, _ = load_converted("resnet50", open_checkpoint(pb), None, None)
    weights = tmp_path_factory.mktemp("tv") / "resnet50.torchvision.pth"
    torch.save(torchvision_state_dict(model), weights)
    root = write_layout(tmp_path_factory.mktemp("val"), "val_map", validation_images(12))
    return ["model=module", f"model.checkpoint={weights}", f"reference_checkpoint={pb}", f"dataset.root={root}",
            f"cache_dir={tmp_path_factory.mktemp('cache')}", "cpu_fusion=false"]  # eager: no compile time


def test_stock_torchvision_resnet50_departs_at_the_stem_max_pool(torchvision_resnet, tmp_path):
    stock = run_benchmark(*torchvision_resnet, "model.module=torchvision.models:resnet50", "reference=torch",
                          f"results_file={tmp_path / 's.json'}")
    ref = stock["reference"]
    assert ref["agreement"] < ref["scores"]["total"] // 2 and ref["max_abs_logit_diff"] > 1  # most top-1s change
    report = compare_report(*torchvision_resnet, "model.module=torchvision.models:resnet50", tmp_path=tmp_path)
    assert report["matched_by"] == "name" and report["first_divergence"] == "maxpool"
    # the same module with only that pool padded as TF pads it agrees on every image
    fixed = run_benchmark(*torchvision_resnet, "model.module=tests.ports:resnet50_tf_pool", "reference=torch",
                          f"results_file={tmp_path / 'f.json'}")
    assert fixed["reference"]["agreement"] == fixed["reference"]["scores"]["total"] == 12
    assert fixed["reference"]["max_abs_logit_diff"] < 1e-2  # BatchNorm2d's epsilon (1e-5, the graph's 1.001e-5)


def test_the_modules_output_is_checked_before_any_image(mobilenet, tmp_path):
    # benchmark.compare refuses it as the run does (the fault: a traceback from inside the module)
    with pytest.raises(ConfigError, match="the module fails on a 1x3x1x1 input"):
        compare_report(*port_args(mobilenet), "model.image_size=1", tmp_path=tmp_path)

    with pytest.raises(ConfigError, match=r"answers a 1x3x128x128 input with \(1, 1001\); expected \[1, 1000\]"):
        setup_run(*port_args(mobilenet), "model.classes=1000")
    with pytest.raises(ConfigError, match="the module fails on a 1x3x1x1 input"):
        setup_run(*port_args(mobilenet), "model.image_size=1")
