"""model.transform=: a user's transform of the exact model, run from the command line and reported
against the exact model image by image, recorded so tables tell it apart; LoadGen, TEST01 and
torchrun (tests/benchmark/evaluation/test_distributed.py) run it too."""

import hashlib
import json
from pathlib import Path

import pytest

from benchmark.evaluation.results import read_results
from preprocessing.errors import ConfigError
from tests import transforms
from tests.helpers import config, run_benchmark, validation_images, varied, write_layout

SOURCE = hashlib.sha256(Path(transforms.__file__).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def common(fixture_graphs, tmp_path_factory):
    root = write_layout(tmp_path_factory.mktemp("val"), "val_map", validation_images(24))
    return [f"model.checkpoint={fixture_graphs(0.25, 96, read_identities=False)}", f"dataset.root={root}",
            f"cache_dir={tmp_path_factory.mktemp('cache')}"]


@pytest.fixture(scope="module")
def exact(common, tmp_path_factory):
    r = run_benchmark(*common, f"results_file={tmp_path_factory.mktemp('exact') / 'r.json'}")
    assert varied(r["predictions"]) and r["transform"] is None and r["against_exact"] is None
    return r


def test_identity_transform_is_the_exact_model_bit_for_bit(common, exact, tmp_path, capsys):
    r = run_benchmark(*common, "model.transform=tests.transforms:identity", f"results_file={tmp_path / 'r.json'}")
    c = r["against_exact"]
    assert (c["fixed"], c["broken"], c["agreement"], c["max_abs_logit_diff"]) == (0, 0, 24, 0.0)
    assert r["predictions"] == exact["predictions"] and c["scores"]["good"] == exact["good"]
    assert r["transform"] == {"target": "tests.transforms:identity", "kwargs": {},
                              "source_file": transforms.__file__, "source_sha256": SOURCE}
    out = capsys.readouterr().out.splitlines()
    assert out[0] == exact["accuracy_line"]
    assert "for reference only, not a submission's verdict: the model ran transformed by tests.transforms:identity" \
        in out[1]
    assert out[2].startswith("transform tests.transforms:identity against exact fp32 on the same 24 images: ")


def test_a_transform_that_moves_the_logits_lists_its_flips(common, exact, tmp_path):
    """Weights rounded to bfloat16, and noise in one named layer given as keyword arguments: the flips
    are the ones the two runs' predictions give."""
    for transform in ("tests.transforms:bf16_weights",
                      "{_target_:tests.transforms.noise,layer:features.conv2d_0.conv,sigma:0.5,seed:1}"):
        r = run_benchmark(*common, f"model.transform={transform}", f"results_file={tmp_path / 'r.json'}")
        c, truth, names = r["against_exact"], r["ground_truth"][:24], r["images"][:24]
        assert c["max_abs_logit_diff"] > 1e-4
        right = [p == t for p, t in zip(r["predictions"], truth)]
        right32 = [p == t for p, t in zip(exact["predictions"], truth)]
        assert c["fixed_images"] == [n for n, a, b in zip(names, right32, right) if b and not a]
        assert c["broken_images"] == [n for n, a, b in zip(names, right32, right) if a and not b]
        assert c["agreement"] == sum(a == b for a, b in zip(r["predictions"], exact["predictions"]))
    assert r["transform"]["target"] == "tests.transforms:noise"
    assert r["transform"]["kwargs"] == {"layer": "features.conv2d_0.conv", "sigma": 0.5, "seed": 1}


def test_tables_tell_a_transformed_run_apart(common, tmp_path):
    """Never the exact baseline, even first by name and with no run of MLPerf's pipeline among the
    files (the fault: the first file by name became the baseline); its transform in its label."""
    from benchmark.table import main as table_main

    exact = run_benchmark(*common, "preprocess=torchvision", f"results_file={tmp_path / 'b-exact.json'}")
    r = run_benchmark(*common, "preprocess=torchvision", "model.transform=tests.transforms:bf16_weights",
                      f"results_file={tmp_path / 'a.json'}")
    assert table_main([str(tmp_path / "a.json"), str(tmp_path / "b-exact.json"), "--out", str(tmp_path / "t")]) == 0
    (row,) = [line.split(" | ") for line in (tmp_path / "t" / "paired.md").read_text().splitlines()
              if line.startswith("| mobilenet_v1")]
    assert row[1] == f"torchvision linear, torch, bf16_weights() {SOURCE[:8]} (a.json)" and row[2].endswith("(b-exact.json)")
    truth = exact["ground_truth"]
    fixed = sum(a != t and b == t for a, b, t in zip(exact["predictions"], r["predictions"], truth))
    broken = sum(a == t and b != t for a, b, t in zip(exact["predictions"], r["predictions"], truth))
    assert (int(row[6]), int(row[7])) == (fixed, broken)


def test_a_transformed_run_is_no_other_runs_baseline(common, exact, tmp_path):
    """A noise transform of MLPerf's pipeline (first by name) and an exact run of another pipeline:
    the transformed run is paired with the exact model its own run computed (same crops), and the
    exact run is never paired against it (the fault: +36 points "gained" against a noisy baseline)."""
    from benchmark.evaluation.pairs import pair_runs

    noisy = run_benchmark(*common, "model.transform={_target_:tests.transforms.noise,layer:features.conv2d_0.conv,"
                          "sigma:2.0,seed:1}", f"results_file={tmp_path / 'a-noise.json'}")
    run_benchmark(*common, "preprocess=torchvision", f"results_file={tmp_path / 'b-torchvision.json'}")
    pairs, unpaired = pair_runs([read_results(tmp_path / name) for name in ("a-noise.json", "b-torchvision.json")])
    assert not unpaired and len(pairs) == 1
    (pair,) = pairs
    assert pair.run.path.name == "a-noise.json" and pair.baseline.label.startswith("exact fp32 of a-noise.json")
    c = noisy["against_exact"]
    assert (pair.comparison["fixed"], pair.comparison["broken"]) == (len(c["fixed_images"]), len(c["broken_images"]))


def test_two_checkpoints_of_one_file_name_are_two_models(common, fixture_graphs, tmp_path):
    """Two graphs both called frozen_graph.pb at one image size: two models (their sha256), each its
    own row, page and pairs; never paired with each other (the fault: one model, "-49 points", and a
    crash on two runs of one pipeline)."""
    import shutil

    from benchmark.evaluation.pairs import pair_runs
    from benchmark.table import main as table_main

    runs = []
    for seed in (0, 1):
        graph = tmp_path / f"graph{seed}" / "frozen_graph.pb"
        graph.parent.mkdir()
        shutil.copy(fixture_graphs(0.25, 96, read_identities=False, seed=seed), graph)
        for pipeline in ("mlperf", "torchvision"):
            path = tmp_path / "runs" / f"{pipeline}-{seed}.json"
            run_benchmark(*common, f"model.checkpoint={graph}", f"preprocess={pipeline}", f"results_file={path}")
            runs.append(read_results(path))
    pairs, unpaired = pair_runs(runs)
    assert not unpaired and len(pairs) == 2
    for p in pairs:  # each torchvision run against the MLPerf pipeline's run of its own graph
        assert p.baseline.results.facts.checkpoint["sha256"] == p.run.results.facts.checkpoint["sha256"]
        assert p.baseline.path.name.split("-")[1] == p.run.path.name.split("-")[1]
    assert len({p.model for p in pairs}) == 2 and all("sha256 " in p.model for p in pairs)
    assert table_main([str(r.path) for r in runs] + ["--out", str(tmp_path / "t"), "--html"]) == 0
    pivot = [line for line in (tmp_path / "t" / "pivot.md").read_text().splitlines() if line.startswith("| mobilenet")]
    assert len(pivot) == 2
    pages = [p for p in (tmp_path / "t" / "report").glob("*.html") if p.name != "index.html"]
    assert len(pages) == 2


def test_loadgen_accuracy_and_test01_run_the_transformed_model(common, tmp_path):
    from benchmark.loadgen.compliance import run as compliance_run

    out = tmp_path / "test01"
    r = compliance_run(config(*common, "model.transform=tests.transforms:bf16_weights", "loadgen.compliance=TEST01",
                              f"loadgen.output_dir={out}", "loadgen.scenario=Offline", "loadgen.target_qps=200",
                              "loadgen.min_duration_ms=200", name="loadgen"))
    assert r["passed"]
    accuracy = json.loads((out / "accuracy" / "results.json").read_text())
    assert accuracy["transform"]["target"] == "tests.transforms:bf16_weights"
    direct = run_benchmark(*common, "model.transform=tests.transforms:bf16_weights",
                           f"results_file={tmp_path / 'direct.json'}")
    assert accuracy["predictions"] == direct["predictions"] and accuracy["accuracy_line"] == direct["accuracy_line"]


@pytest.mark.parametrize("overrides,message", [
    (["model.transform=tests.transforms:identity", "precision=int8"],
     "model.transform=tests.transforms:identity with precision=int8: the harness quantizes its own"),
    (["model.transform=tests.transforms:identity", "backend=tf"], "it runs with backend=torch, not backend=tf"),
    (["model.transform=tests.no_such_module:f"], "model.transform=tests.no_such_module:f: cannot import"),
    (["model.transform=tests.transforms:missing"], "tests.transforms has no callable missing"),
    (["model.transform=tests.transforms:not_a_module"], "returned str, not a torch.nn.Module"),
    (["model.transform=tests.transforms:wrapped", "cpu_fusion=true"],
     "cpu_fusion=true fuses a model by its family's rule, and Sequential (the transformed model) has none"),
    (["model.transform=transforms"], "expected package.module:function"),
])
def test_refusals(common, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_benchmark(*common, *overrides)


@pytest.mark.parametrize("transform", [
    "{_target_:tests.transforms.zero_channels,layer:features.conv2d_1_pointwise.conv,channels:8}",
    "{_target_:tests.transforms.doubled,layer:features.conv2d_1_pointwise.conv}",
])
def test_the_compiled_path_computes_what_a_hook_or_subclass_made(common, exact, tmp_path, transform):
    """A forward hook, or a subclass's own forward, on a TF-SAME convolution: the default compiled
    path (cpu_fusion=graph) computes the transformed model the eager one does (it had swapped the
    layer for a plain convolution: 0 flips and a difference of 0), and the per-convolution rebuild
    (cpu_fusion=true), which would drop it, is refused."""
    eager = run_benchmark(*common, f"model.transform={transform}", "cpu_fusion=false",
                          f"results_file={tmp_path / 'eager.json'}")
    graph = run_benchmark(*common, f"model.transform={transform}", f"results_file={tmp_path / 'graph.json'}")
    e, g = eager["against_exact"], graph["against_exact"]
    assert graph["cpu_fusion"] == "graph" and eager["cpu_fusion"] is False
    assert e["max_abs_logit_diff"] > 0.1 and e["agreement"] < 24  # the transform moves the model
    assert g["max_abs_logit_diff"] == pytest.approx(e["max_abs_logit_diff"], rel=1e-3)  # oneDNN's own kernels
    assert graph["predictions"] == eager["predictions"]
    assert (g["fixed"], g["broken"]) == (e["fixed"], e["broken"])
    with pytest.raises(ConfigError, match=r"cpu_fusion=true rebuilds the model from its weights .* "
                                          r"features\.conv2d_1_pointwise\.conv (has a forward hook|is Doubled)"):
        run_benchmark(*common, f"model.transform={transform}", "cpu_fusion=true")


def test_a_replaced_activation_survives_the_fast_paths(resnet_graphs, tmp_path):
    """Every ReLU of ResNet-50 made a GELU: the compiled path computes it as the eager model does;
    the per-convolution rebuild (which fuses each ReLU into its convolution) is refused."""
    from tests.benchmark.nn.test_cpu_fusion import SMALL_RESNET

    root = write_layout(tmp_path / "val", "val_map", validation_images(12))
    common = ["model=resnet50", f"model.checkpoint={resnet_graphs(**SMALL_RESNET)}", f"dataset.root={root}",
              f"cache_dir={tmp_path / 'cache'}", "model.transform=tests.transforms:gelu"]
    eager = run_benchmark(*common, "cpu_fusion=false", f"results_file={tmp_path / 'eager.json'}")
    graph = run_benchmark(*common, f"results_file={tmp_path / 'graph.json'}")
    e, g = eager["against_exact"], graph["against_exact"]
    assert e["max_abs_logit_diff"] > 1e-3
    assert g["max_abs_logit_diff"] == pytest.approx(e["max_abs_logit_diff"], rel=1e-3)
    assert graph["predictions"] == eager["predictions"]
    with pytest.raises(ConfigError, match=r"cpu_fusion=true rebuilds .*: relu is GELU, the converted model's ReLU"):
        run_benchmark(*common, "cpu_fusion=true")
