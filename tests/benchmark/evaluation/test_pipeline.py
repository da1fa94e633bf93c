"""MLPerf's pipeline is one predicate on every setting of the pipeline (families.mlperf_departures),
not its config's name: read by the target's reservations, the tables' baseline and the submission."""

import pytest

from benchmark.evaluation.results import SCHEMA_VERSION
from benchmark.families import mlperf_departures
from preprocessing.pipelines import make_settings
from tests.helpers import results_of, run_benchmark, validation_images, write_layout


def test_every_setting_counts_not_the_name():
    assert mlperf_departures("resnet50", make_settings("mine", 224, "area")) == []
    assert mlperf_departures("resnet50", make_settings("mlperf", 224, "linear")) == \
        ["interpolation=linear (MLPerf's: area)"]
    assert mlperf_departures("mobilenet_v1", make_settings("mlperf", 224, "linear", crop_percent=80,
                                                            crop_rounding="round")) == \
        ["crop_percent=80 (MLPerf's: 87.5)", "crop_rounding=round (MLPerf's: floor)"]
    assert mlperf_departures("mobilenet_v1", {"name": "tf", "interpolation": "linear", "decoder": "tf",
                                              "resize": "tf"}) == \
        ["decoder=tf (MLPerf's: opencv)", "resize=tf (MLPerf's: opencv)"]


@pytest.fixture(scope="module")
def common(fixture_graphs, tmp_path_factory):
    root = write_layout(tmp_path_factory.mktemp("val"), "val_map", validation_images(12))
    return [f"model.checkpoint={fixture_graphs(0.25, 96, read_identities=False)}", f"dataset.root={root}",
            f"cache_dir={tmp_path_factory.mktemp('cache')}"]


def test_a_cropped_mlperf_config_gets_a_reservation_and_is_no_baseline(common, tmp_path):
    """preprocess=mlperf with crop_percent=80 keeps the config's name: the target line says the
    pipeline is not MLPerf's (the fault: an MLPerf verdict without a reservation), and the tables take
    the run of MLPerf's own pipeline as the baseline, even when the cropped run comes first by name."""
    from benchmark.evaluation.pairs import pair_runs

    cropped = run_benchmark(*common, "preprocess.crop_percent=80", f"results_file={tmp_path / 'a.json'}")
    assert cropped["preprocess"]["name"] == "mlperf"
    assert "the preprocessing is not MLPerf's pipeline (crop_percent=80 (MLPerf's: 87.5))" in \
        cropped["mlperf_target"]["reservations"]
    exact = run_benchmark(*common, f"results_file={tmp_path / 'b.json'}")
    assert not any("preprocessing" in r for r in exact["mlperf_target"]["reservations"])
    (pair,), unpaired = pair_runs([results_of(cropped, tmp_path / "a.json"), results_of(exact, tmp_path / "b.json")])
    assert not unpaired and (pair.baseline.path.name, pair.run.path.name) == ("b.json", "a.json")


def test_a_variant_run_of_the_same_pipeline_in_another_cache_folder_pairs_with_the_baseline(tmp_path):
    """The crops of one pipeline are the same whichever cache_dir holds them: an int8 run whose cache
    folder differs from the exact run's is paired with that exact run, not with its own exact side."""
    from benchmark.evaluation.pairs import pair_runs

    def run(cache, precision, own=None):
        r = {"schema_version": SCHEMA_VERSION, "model": "m", "arch": "mobilenet_v1", "checkpoint": {"path": "/x/g.pb", "member": None, "sha256": "ab" * 32},
             "image_size": 224, "backend": "torch", "precision": precision, "images": list("abcd"),
             "ground_truth": [1, 2, 3, 4], "predictions": [1, 2, 0, 0],
             "preprocess": {**make_settings("mlperf", 224, "linear").to_dict(), "cache": cache}}
        if own:
            calls = {"top5": [[c, 9, 8, 7, 6] for c in own], "top5_prob": [[0.5, 0.2, 0.1, 0.1, 0.1]] * 4,
                     "label_prob": [0.5] * 4}
            r["against_exact"] = {"against": "exact", "scores": {"good": 3, "total": 4}, "calls": calls}
        return r

    exact, int8 = run("/cache/a", "fp32"), run("/cache/b", "int8", own=[1, 2, 3, 0])
    (pair,), unpaired = pair_runs([results_of(exact, tmp_path / "exact.json"),
                                   results_of(int8, tmp_path / "int8.json")])
    assert not unpaired and pair.baseline.path.name == "exact.json" and pair.baseline.label.endswith("(exact.json)")
