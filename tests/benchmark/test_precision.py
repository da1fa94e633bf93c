"""precision= other than fp32: each run judged image by image against the exact fp32 model on the same
crops; int8 calibrated on the listed images only; refusals where a precision cannot run."""

import json
from pathlib import Path

import pytest

from preprocessing.calibration import mlperf_list
from preprocessing.errors import ConfigError, UserError
from tests.helpers import run_benchmark, validation_images, varied, write_layout


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """24 images to evaluate, then 12 named after MLPerf's option_1 calibration images (listed after
    the 24 in val_map.txt: dataset.limit=24 evaluates the first only; calibration reads the root's all)."""
    images = validation_images(24)
    stand_ins = [(name, 0, images[i][2]) for i, name in enumerate(mlperf_list("option_1").names[:12])]
    return write_layout(tmp_path_factory.mktemp("val"), "val_map", images + stand_ins)


@pytest.fixture(scope="module")
def common(dataset, fixture_graphs, tmp_path_factory):
    graph = fixture_graphs(0.25, 96, read_identities=False)
    return [f"model.checkpoint={graph}", f"dataset.root={dataset}", "dataset.limit=24",
            f"cache_dir={tmp_path_factory.mktemp('cache')}"]


@pytest.fixture(scope="module")
def exact(common, tmp_path_factory):
    r = run_benchmark(*common, f"results_file={tmp_path_factory.mktemp('fp32') / 'r.json'}")
    assert varied(r["predictions"]) and r["against_exact"] is None and r["precision"] == "fp32"
    assert r["numerics"]["flags"]["float32_matmul"] == "highest"  # read inside the forward
    return r


def check_against_exact(r, exact, precision):
    """The comparison a precision run reports is the one its predictions and fp32's give, and the
    precision recorded is the one that ran (the exact model's, read inside its forward: fp32)."""
    c, truth = r["against_exact"], r["ground_truth"][:24]
    assert c["against"] == "exact" and r["precision"] == r["numerics"]["precision"] == precision
    numerics = c["other"]["numerics"]
    assert numerics["precision"] == "fp32" and numerics["flags"]["float32_matmul"] == "highest"
    scores = c["scores"]
    assert (scores["good"], scores["top5_good"], scores["total"]) == (exact["good"], exact["top5_good"], 24)
    assert c["calls"]["top5"][:24] == exact["calls"]["top5"][:24]
    names = r["images"][:24]
    right = [p == t for p, t in zip(r["predictions"], truth)]
    right32 = [p == t for p, t in zip(exact["predictions"], truth)]
    assert c["fixed_images"] == [n for n, a, b in zip(names, right32, right) if b and not a]
    assert c["broken_images"] == [n for n, a, b in zip(names, right32, right) if a and not b]
    assert c["agreement"] == sum(a == b for a, b in zip(r["predictions"], exact["predictions"]))
    assert c["disagreements"] == [n for n, a, b in zip(names, r["predictions"], exact["predictions"]) if a != b]
    assert c["images_per_s"] > 0 and r["timing"]["eval_images_per_s"] > 0
    assert c["gate"]["accuracy"] == round(100 * exact["good"] / 24, 3)


def test_bf16_on_cpu_against_exact_fp32(common, exact, tmp_path, capsys):
    import torch

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no bfloat16 support in oneDNN: precision=bf16 is refused here (tested below)")
    r = run_benchmark(*common, "precision=bf16", f"results_file={tmp_path / 'r.json'}")
    check_against_exact(r, exact, "bf16")
    # bf16 keeps 8 bits of mantissa: logits move (a run that silently stayed fp32 would show 0)
    assert r["against_exact"]["max_abs_logit_diff"] > 1e-4 and r["numerics"]["autocast"] == "bfloat16"
    out = capsys.readouterr().out.splitlines()
    assert out[0] == r["accuracy_line"] and out[2].startswith("bf16 against exact fp32 on the same 24 images: ")


def test_bf16_refused_without_cpu_support(common, monkeypatch):
    import torch

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.raises(ConfigError, match="precision=bf16: this CPU has no bfloat16 support"):
        run_benchmark(*common, "precision=bf16", "device=cpu")


@pytest.mark.parametrize("overrides,message", [
    (["precision=fp16", "device=cpu"], "precision=fp16 runs on CUDA"),
    (["precision=tf32", "device=cpu"], "precision=tf32 runs on CUDA"),
    (["precision=int4"], "precision=int4: expected one of fp32, bf16, fp16, tf32, int8"),
    (["precision=int8", "backend=tf"], "precision=int8 is a precision of the torch backend, not backend=tf"),
])
def test_refusals(common, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_benchmark(*common, *overrides)


def test_int8_calibrates_on_listed_images_only(common, exact, dataset, tmp_path, capsys):
    listed = mlperf_list("option_1").names
    r = run_benchmark(*common, "precision=int8", "calibration.list=option_1", "calibration.min_images=12",
                      f"results_file={tmp_path / 'r.json'}")
    check_against_exact(r, exact, "int8")
    cal = r["calibration"]
    assert cal["mlperf_list"] == "option_1" and cal["images"] == 12 and len(cal["missing"]) == 488
    manifest = json.loads((Path(cal["crops"]) / "manifest.json").read_text())
    assert manifest["files"] == list(listed[:12])  # the listed images, and only they, were cropped
    assert "calibration: 488 of the 500 images of" in capsys.readouterr().err
    assert r["against_exact"]["max_abs_logit_diff"] > 1e-3  # quantized: logits move
    # (that the quantized model follows this one: tests/benchmark/nn/test_quantize.py, on the real graph)
    assert not cal["reused"]
    # the recipe that made it, in the results: engine, bits, bias correction, FX backend config
    from benchmark.nn.quantize import recipe
    assert {k: cal[k] for k in recipe().to_dict()} == recipe().to_dict()
    again = run_benchmark(*common, "precision=int8", "calibration.list=option_1", "calibration.min_images=12",
                          f"results_file={tmp_path / 'again.json'}")
    assert again["calibration"]["reused"] and again["predictions"] == r["predictions"]  # the cached model


def test_a_users_list_with_names_of_both_runs_and_says_so(common, tmp_path, capsys):
    """A file of the user's that happens to hold names of both of MLPerf's lists is not MLPerf's list
    either way: it runs, recorded as no MLPerf list, with a note (it was refused)."""
    one, two = mlperf_list("option_1").names, mlperf_list("option_2").names
    mixed = tmp_path / "mine.txt"
    mixed.write_text("\n".join(list(one[:12]) + [n for n in two if n not in one][:1]) + "\n")
    r = run_benchmark(*common, "precision=int8", f"calibration.list={mixed}", "calibration.min_images=12",
                      f"results_file={tmp_path / 'r.json'}")
    assert r["calibration"]["mlperf_list"] is None and "holds names of both" in r["calibration"]["note"]
    out, err = capsys.readouterr()
    assert f"calibration: {mixed} holds names of both of MLPerf's calibration lists" in err
    # the verdict's own line says the list is not MLPerf's (not only the JSON)
    assert out.splitlines()[1].endswith(f"; calibrated on {mixed}, not one of MLPerf's calibration lists")
    assert r["mlperf_target"]["reservations"][-1] == f"calibrated on {mixed}, not one of MLPerf's calibration lists"
    assert r["against_exact"]["gate"]["reservations"] == r["mlperf_target"]["reservations"][:1]


def test_unreadable_calibration_images_are_left_out(dataset, common, tmp_path, capsys, monkeypatch):
    """With dataset.on_error=skip an unreadable listed image is a blank crop in the cache: it is left
    out of calibration, counted and named, and the observers never see it."""
    import shutil

    from benchmark.runtimes.pytorch import TorchRuntime

    root = shutil.copytree(dataset, tmp_path / "val")
    broken = mlperf_list("option_1").names[3]
    (root / broken).write_bytes(b"not a JPEG")
    fed = []
    quantize = TorchRuntime.quantize
    monkeypatch.setattr(TorchRuntime, "quantize",
                        lambda self, crops, *a: fed.append(crops) or quantize(self, crops, *a))
    r = run_benchmark(*[c for c in common if not c.startswith("dataset.root")], f"dataset.root={root}",
                      "dataset.on_error=skip", "precision=int8", "calibration.list=option_1",
                      "calibration.min_images=11", f"results_file={tmp_path / 'r.json'}")
    cal = r["calibration"]
    assert cal["images"] == 11 and cal["unreadable"] == [broken]
    assert len(fed[0]) == 11 and all(crop.any() for crop in fed[0])  # no blank crop among them
    assert f"calibration: 1 listed image(s) could not be read and are left out: {broken}" in capsys.readouterr().err
    with pytest.raises(UserError, match=rf"11 of the images of .* could be read \(1 unreadable: {broken}\), 12 needed"):
        run_benchmark(*[c for c in common if not c.startswith("dataset.root")], f"dataset.root={root}",
                      "dataset.on_error=skip", "precision=int8", "calibration.list=option_1",
                      "calibration.min_images=12")


def test_int8_model_is_not_reused_for_another_conversion(common, tmp_path, monkeypatch):
    """The quantized model is keyed on what it was made from: after a converter change (here one
    weight of the converted model moved) an int8 model of the old conversion is not reused."""
    import torch

    from benchmark.runtimes.source import ModelSource

    args = [*common, "precision=int8", "calibration.list=option_1", "calibration.min_images=12"]
    first = run_benchmark(*args, f"results_file={tmp_path / 'a.json'}")
    assert run_benchmark(*args, f"results_file={tmp_path / 'b.json'}")["calibration"]["reused"]
    converted = ModelSource.torch_model

    def changed(self, fold_bn=True):
        model = converted(self, fold_bn)
        with torch.no_grad():
            next(model.parameters()).mul_(1.01)
        return model

    monkeypatch.setattr(ModelSource, "torch_model", changed)
    again = run_benchmark(*args, f"results_file={tmp_path / 'c.json'}")["calibration"]
    assert not again["reused"] and again["quantized_model"] != first["calibration"]["quantized_model"]


def test_int8_calibration_errors(common, tmp_path):
    with pytest.raises(UserError, match=r"488 of its 500 images are not in the dataset .* 12 found, 500 needed"):
        run_benchmark(*common, "precision=int8")  # every listed image needed by default
    one = mlperf_list("option_1").names
    changed = tmp_path / "cal_image_list_option_1.txt"
    changed.write_text("\n".join(one[:12]) + "\n")
    with pytest.raises(UserError, match="named like MLPerf's cal_image_list_option_1.txt but its sha256"):
        run_benchmark(*common, "precision=int8", f"calibration.list={changed}")
    outside = tmp_path / "outside.txt"
    outside.write_text("\n".join(list(one[:12]) + ["ILSVRC2012_val_00049999.JPEG"]) + "\n")
    with pytest.raises(UserError, match=r"1 of its 13 images are not in the dataset .*ILSVRC2012_val_00049999"):
        run_benchmark(*common, "precision=int8", f"calibration.list={outside}")



def test_loadgen_run_records_its_precision_and_is_never_the_fp32_baseline(common, tmp_path):
    """A LoadGen accuracy run of int8 says int8 in its results, so the tables pair it against the
    real fp32 run and never take it for the baseline (the fault: recorded as fp32, the first file
    by name became the baseline of the fp32 run). Both of the torchvision pipeline: no run of MLPerf's
    is there to be chosen for its pipeline, so only the precision can decide."""
    from benchmark.loadgen.run import run as loadgen_run
    from benchmark.table import main as table_main
    from tests.helpers import config

    tv = [*common, "preprocess=torchvision"]
    r = loadgen_run(config(*tv, "precision=int8", "calibration.list=option_1", "calibration.min_images=12",
                           "loadgen.scenario=Offline", "loadgen.mode=accuracy", f"loadgen.output_dir={tmp_path / 'lg'}",
                           name="loadgen"))
    assert r["precision"] == r["numerics"]["precision"] == "int8" and r["numerics"]["int8_engine"]
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "a-loadgen-int8.json").write_text(json.dumps(r))  # first by name
    run_benchmark(*tv, f"results_file={runs / 'b-fp32.json'}")
    assert table_main([str(runs / "a-loadgen-int8.json"), str(runs / "b-fp32.json"), "--out", str(tmp_path / "t")]) == 0
    (row,) = [line.split(" | ") for line in (tmp_path / "t" / "paired.md").read_text().splitlines()
              if line.startswith("| mobilenet_v1")]
    assert row[1].endswith(", int8 (a-loadgen-int8.json)") and row[2].endswith("(b-fp32.json)")
