"""python -m benchmark.submission: a dry run's folder holds every file and field MLPerf's submission
checker reads, each in the format it parses; the accuracy log's hash and truncation are MLPerf's;
finished runs are not run again; what the checker would reject is refused."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from benchmark.evaluation.results import SCHEMA_VERSION
from benchmark.submission import make as submission
from benchmark.submission import package
from benchmark.submission.system import FIELDS, MEANINGFUL
from preprocessing.errors import ConfigError
from tests.helpers import config, results_of, validation_images, write_layout

SYSTEM = {"host_storage_type": "SSD", "host_memory_configuration": "1x 24 GB", "host_networking": "none",
          "host_networking_topology": "N/A", "host_network_card_count": 1, "cooling": "air"}
# the checker's patterns for ResNet's accuracy line and the hash line of accuracy.txt
ACCURACY = r"^(?:\{\"accuracy|accuracy)[\": ]*=?\s*([\d\.]+).*"
HASH = r"^hash=([\w\d]+)$"


def dry_run_overrides(fixture_graphs, folder) -> list[str]:
    """Offline with TEST01 on 72 images, an exported model (no TensorFlow in the runs)."""
    from benchmark.convert import load_converted
    from benchmark.export import export
    from benchmark.formats.checkpoint import open_checkpoint

    ckpt = open_checkpoint(fixture_graphs(0.25, 96, read_identities=False))
    export(load_converted("mobilenet_v1", ckpt, None, None)[0], "mobilenet_v1", ckpt, folder / "m.safetensors", {})
    root = write_layout(folder / "val", "val_map", validation_images(72))
    return [f"model.checkpoint={folder / 'm.safetensors'}", f"dataset.root={root}", f"cache_dir={folder / 'cache'}",
            f"submission.out={folder / 'out'}", "submission.submitter=Tester", "submission.system=box",
            "submission.dry_run=true", "submission.dry_run_duration_ms=100", "submission.scenarios=[Offline]",
            "submission.compliance=[TEST01,TEST04]",
            "batch_size=8", "cpu_fusion=false", *(f"submission.system_desc.{k}={v}" for k, v in SYSTEM.items())]


def test_a_dry_run(fixture_graphs, tmp_path, monkeypatch):
    """One dry run (its LoadGen runs take most of this test's time), every check of its folder."""
    overrides = dry_run_overrides(fixture_graphs, tmp_path)
    dry = {"overrides": overrides, "results": submission.make(config(*overrides, name="submission"), overrides),
           "out": tmp_path / "out", "work": tmp_path / "out-runs"}
    every_file_and_field(dry)
    the_hash_and_the_truncation(dry)
    finished_runs_are_not_run_again(dry, monkeypatch)
    a_replaced_checkpoint_is_not_resumed(dry, tmp_path, monkeypatch)


def every_file_and_field(dry):
    from benchmark.loadgen.settings import read_detail_log

    root = dry["out"] / "open" / "Tester"
    scenario = dry["results"] / "Offline"
    assert dry["results"] == root / "results" / "box" / "mobilenet"
    files = sorted(str(p.relative_to(scenario)) for p in scenario.rglob("*") if p.is_file())
    assert files == ["README.md", "TEST01/performance/run_1/mlperf_log_detail.txt",
                     "TEST01/performance/run_1/mlperf_log_summary.txt", "TEST01/verify_accuracy.txt",
                     "TEST01/verify_performance.txt", "TEST04/performance/run_1/mlperf_log_detail.txt",
                     "TEST04/performance/run_1/mlperf_log_summary.txt", "TEST04/verify_performance.txt",
                     "accuracy/accuracy.txt", "accuracy/mlperf_log_accuracy.json",
                     "accuracy/mlperf_log_detail.txt", "accuracy/mlperf_log_summary.txt", "measurements.json",
                     "performance/run_1/mlperf_log_detail.txt", "performance/run_1/mlperf_log_summary.txt", "user.conf"]
    for log in ("accuracy", "performance/run_1", "TEST01/performance/run_1"):
        detail = read_detail_log(scenario / log / "mlperf_log_detail.txt")
        assert detail["values"]["effective_scenario"] == "Offline" and detail["errors"] == []  # no LoadGen ERROR
        assert "Result is : VALID" in (scenario / log / "mlperf_log_summary.txt").read_text() or log == "accuracy"
    assert read_detail_log(scenario / "TEST01/performance/run_1/mlperf_log_detail.txt")["values"][
        "effective_accuracy_log_sampling_target"] == 1024  # the audit config was read
    test04 = read_detail_log(scenario / "TEST04/performance/run_1/mlperf_log_detail.txt")["values"]
    assert test04["effective_performance_issue_same"] is True and test04["effective_performance_issue_same_index"] == 3
    assert (scenario / "TEST04" / "verify_performance.txt").read_text().splitlines()[-1].startswith("TEST ")
    measurements = json.loads((scenario / "measurements.json").read_text())
    for key in ("input_data_types", "retraining", "starting_weights_filename", "weight_data_types",
                "weight_transformations"):
        assert isinstance(measurements[key], str) and measurements[key], key
    assert measurements["starting_weights_filename"] == "m.safetensors"
    # tied to what ran: the accuracy run's precision, backend and library
    ran = json.loads((dry["work"] / "Offline" / "accuracy" / "results.json").read_text())
    assert (ran["precision"], ran["backend"], ran["device"]) == ("fp32", "torch", "cpu")
    assert measurements["weight_data_types"] == "fp32" and measurements["harness"]["precision"] == "fp32"
    assert measurements["weight_transformations"] == ("batch norms folded into the convolutions (as TensorFlow's "
                                                      "optimizer folds them)" if ran["fold_bn"] else
                                                      "none: the graph's weights as they are")
    conf = (scenario / "user.conf").read_text()
    assert "mobilenet.Offline.target_qps = " in conf and "mobilenet.SingleStream.target_latency = " in conf
    assert submission.settings_of(conf, "Offline") == {line.replace(" ", "") for line in conf.splitlines() if
                                                       line.startswith(("mobilenet.Offline.", "*.*."))}
    system = json.loads((root / "systems" / "box.json").read_text())
    assert sorted(system) == sorted(FIELDS) and len(FIELDS) == 35 and len(MEANINGFUL) == 26
    assert all(isinstance(system[k], str) and system[k].strip() for k in MEANINGFUL)  # a 0 counts as empty
    assert (system["division"], system["submitter"], system["status"]) == ("open", "Tester", "available")
    assert system["host_network_card_count"] == "1" and system["accelerators_per_node"] == "0"
    assert system["framework"] == f"PyTorch {ran['runtime_version']}" and "torch " not in system["other_software_stack"]
    assert (root / "src" / "README.md").read_text().startswith("# Source")
    assert "TEST PASS" in (scenario / "TEST01" / "verify_accuracy.txt").read_text().splitlines()
    # a dry run's sub-second runs: their speeds compared, the verdict written, not judged
    assert (scenario / "TEST01" / "verify_performance.txt").read_text().splitlines()[-1] in ("TEST PASS", "TEST FAIL")
    # not a submission, and said so
    assert "DRY RUN: NOT A SUBMISSION" in (scenario / "README.md").read_text()
    assert (dry["out"] / submission.DRY_RUN_MARK).is_file()


def the_hash_and_the_truncation(dry):
    """accuracy.txt holds the hash of the whole log, and the log is cut as MLPerf cuts it."""
    accuracy = dry["results"] / "Offline" / "accuracy"
    whole = (dry["work"] / "Offline" / "accuracy" / "mlperf_log_accuracy.json").read_text()
    lines = (accuracy / "accuracy.txt").read_text().splitlines()
    run = json.loads((dry["work"] / "Offline" / "accuracy" / "results.json").read_text())
    assert lines[0] == run["accuracy_line"] and re.match(ACCURACY, lines[0]).group(1) == f"{run['top1']:.3f}"
    (digest,) = [m.group(1) for line in lines if (m := re.match(HASH, line))]
    assert digest == hashlib.sha256(whole.encode()).hexdigest()
    # 72 answers: under 4 KiB, kept whole, as MLPerf's truncation keeps it; a longer log is cut to its
    # first and last 4 KiB around MLPerf's marker
    assert len(whole) < package.VIEWABLE and (accuracy / "mlperf_log_accuracy.json").read_text() == whole
    entries = (f'{{ "seq_id" : {i}, "qsl_idx" : {i}, "data" : "{i:08X}" }}' for i in range(50_000))
    long = "[\n" + ",\n".join(entries) + "\n]\n"
    cut = package.truncated(long)
    assert cut == long[:4096] + "\n\n...\n\n" + long[-4096:] and len(cut) <= package.MAX_ACCURACY_LOG


def finished_runs_are_not_run_again(dry, monkeypatch):
    before = {p: p.read_bytes() for p in dry["results"].rglob("*") if p.is_file() and p.suffix != ".md"}

    def no_run(*args, **kwargs):
        raise AssertionError(f"ran again: {args}")

    monkeypatch.setattr(submission.subprocess, "run", no_run)
    submission.make(config(*dry["overrides"], name="submission"), dry["overrides"])
    assert {p: p.read_bytes() for p in before} == before
    # a run left unfinished (its INCOMPLETE mark) is removed and run again, and only it
    (dry["work"] / "Offline" / "TEST01" / submission.INCOMPLETE).write_text("killed")
    with pytest.raises(AssertionError, match=r"ran again: \(\[.*loadgen.output_dir=\S*/Offline/TEST01'"):
        submission.make(config(*dry["overrides"], name="submission"), dry["overrides"])
    assert not (dry["work"] / "Offline" / "TEST01").exists()


def a_replaced_checkpoint_is_not_resumed(dry, tmp_path, monkeypatch):
    """Another file at model.checkpoint's path (the fault: the folder repackaged from runs of the old
    file, with its accuracy and sha256): refused before any run, the change named."""
    monkeypatch.setattr(submission, "loadgen_run", lambda *a, **k: pytest.fail(f"ran {a}"))
    model = tmp_path / "m.safetensors"
    model.write_bytes(model.read_bytes() + b" ")
    with pytest.raises(ConfigError, match=r"holds runs made with other settings .*: model\.checkpoint's sha256 \("):
        submission.make(config(*dry["overrides"], name="submission"), dry["overrides"])
    # so is another transform source
    with pytest.raises(ConfigError, match=r"model\.transform's sha256 \(None then, [0-9a-f]{12} now\)"):
        model.write_bytes(model.read_bytes()[:-1])
        overrides = [*dry["overrides"], "model.transform=tests.transforms:identity"]
        submission.make(config(*overrides, name="submission"), overrides)


MLPERF_RESNET = {"name": "mlperf", "image_size": 224, "interpolation": "area", "crop_percent": 87.5, "decoder": "opencv",
                 "resize": "opencv", "antialias": True, "crop_rounding": "floor"}


def accuracy_run(**fields):
    return results_of({"schema_version": SCHEMA_VERSION, "kind": "loadgen-accuracy", "checkpoint": {"path": "/m/resnet50_v1.pb", "sha256": "ab" * 32}, "fold_bn": False, "arch": "resnet50",
            "judged_as": "resnet50", "preprocess": MLPERF_RESNET, **fields})


@pytest.mark.parametrize("fields,types,transformations", [
    ({"precision": "fp32"}, "fp32", "none: the graph's weights as they are"),
    ({"precision": "bf16", "cpu_fusion": "graph", "device": "cpu"}, "bf16",
     "weights rounded to bfloat16: frozen as bfloat16 constants in the compiled CPU model (traced under autocast)"),
    ({"precision": "bf16", "cpu_fusion": False, "device": "cpu"}, "bf16",
     "weights rounded to bfloat16: cast to bfloat16 at each layer by PyTorch autocast from float32 copies"),
    ({"precision": "fp16", "device": "cuda:0"}, "fp16",
     "weights rounded to float16: cast to float16 at each layer by PyTorch autocast from float32 copies"),
    ({"precision": "tf32", "device": "cuda:0"}, "fp32",
     "matrix products and convolutions on TF32 tensor cores, weights stored in float32"),
    ({"precision": "int8", "calibration": {"list": "option_1", "images": 500}}, "int8",
     "post-training int8 quantization calibrated on option_1 (500 images)"),
])
def test_measurements_say_what_ran(fields, types, transformations):
    """The weights' data type is the one the arithmetic reads (the fault: fp32 for bf16, whose compiled
    CPU model freezes bfloat16 weights)."""
    m = submission.measurements(None, accuracy_run(**fields))
    assert (m["weight_data_types"], m["weight_transformations"]) == (types, transformations)
    assert m["harness"]["preprocessing"]["departs_from_mlperf"] == []


def test_the_preprocessing_is_said_where_it_is_not_mlperfs():
    """An open-division run whose pipeline is called mlperf but crops 80 %: its departure written in
    measurements.json, whatever the config's name."""
    cropped = {**MLPERF_RESNET, "crop_percent": 80.0}
    m = submission.measurements(None, accuracy_run(precision="fp32", preprocess=cropped))
    assert m["harness"]["preprocessing"]["departs_from_mlperf"] == ["crop_percent=80 (MLPerf's: 87.5)"]


def test_the_system_names_the_framework_that_ran_and_the_gpus_used(monkeypatch):
    """backend=tf is TensorFlow, not PyTorch; a run on one of four visible GPUs uses one."""
    import types

    import torch

    from benchmark import runtimes
    from benchmark.submission.system import machine

    versions = {"torch": "2.14.1", "tensorflow": "2.21.0", "numpy": "2.3"}
    facts = machine("cpu", versions, runtimes.framework("tf", "2.21.0"), runtimes.RUNTIMES["tf"].library_key)
    assert facts["framework"] == "TensorFlow 2.21.0" and facts["other_software_stack"] == "torch 2.14.1, numpy 2.3"
    assert runtimes.framework("onnxruntime", "1.23.2") == "ONNX Runtime 1.23.2"
    assert machine("cpu", versions, "OpenVINO 2025.3")["framework"] == "OpenVINO 2025.3"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda d: types.SimpleNamespace(name="NVIDIA H100", total_memory=80 * 2**30))
    facts = machine("cuda:2", versions, "PyTorch 2.14.1", "torch")
    assert (facts["accelerators_per_node"], facts["accelerator_model_name"]) == ("1", "NVIDIA H100")


def test_refusals(tmp_path, monkeypatch):
    """Each before any run (a run would fail here: no model)."""
    root = write_layout(tmp_path / "val", "val_map", validation_images(72))
    base = [f"model.checkpoint={tmp_path / 'm.safetensors'}", f"dataset.root={root}",
            f"submission.out={tmp_path / 'o'}",
            "submission.submitter=Tester", "submission.system=box", "submission.dry_run=true",
            "submission.scenarios=[Offline]", *(f"submission.system_desc.{k}={v}" for k, v in SYSTEM.items())]
    monkeypatch.setattr(submission, "loadgen_run", lambda *a, **k: pytest.fail(f"ran {a}"))

    def refused(*changes):
        overrides = [*base, *changes]
        submission.make(config(*overrides, name="submission"), overrides)

    with pytest.raises(ConfigError, match="submission.system is not set: the system's name"):
        overrides = [o for o in base if not o.startswith("submission.system=")]
        submission.make(config(*overrides, name="submission"), overrides)
    with pytest.raises(ConfigError, match="lists 72 images: a submission's accuracy run covers all 50,000"):
        refused("submission.dry_run=false")
    with pytest.raises(ConfigError, match="dataset.limit=8: a submission's accuracy run covers all 50,000"):
        refused("submission.dry_run=false", "dataset.limit=8")
    with pytest.raises(ConfigError, match="the system description needs cooling: the machine cannot tell"):
        refused("submission.system_desc.cooling=")
    with pytest.raises(ConfigError, match="submission.division=closed: MobileNet has no closed benchmark in current"):
        refused("submission.division=closed")
    with pytest.raises(ConfigError, match="loadgen.min_duration_ms=10: a submission runs at MLPerf's settings"):
        refused("loadgen.min_duration_ms=10")
    work = tmp_path / "o-runs"
    work.mkdir()
    (work / "settings.json").write_text(json.dumps({"overrides": ["dataset.limit=3"]}))
    with pytest.raises(ConfigError, match="o-runs holds runs made with other settings"):
        refused()


def test_an_invalid_performance_run_is_not_a_result(tmp_path):
    folder = tmp_path / "performance"
    folder.mkdir()
    invalid = {"kind": "loadgen-performance", "loadgen": {"mode": "performance", "validity": "INVALID", "invalid_reason": "min duration not met",
                           "early_stopping_result": None, "loadgen_errors": [], "scenario": "Offline",
                           "min_duration_met": False, "value": 630.4}}
    (folder / "results.json").write_text(json.dumps(invalid))
    assert submission.finished(folder) is None  # run again next time, never packaged
    # a probe is read for its rate or latency whatever its validity: kept, so a resumed command plans
    # (and keeps the runs it planned) as before
    assert submission.finished(folder, probe=True).loadgen.validity == "INVALID"
    assert submission.achieved(folder) == 630.4  # at least the rate it achieved: Offline's next target
    invalid["loadgen"].update(scenario="SingleStream", value=2_000_000)  # ns: 500 images/s
    (folder / "results.json").write_text(json.dumps(invalid))
    assert submission.achieved(folder) == 500.0
    invalid["loadgen"].update(scenario="Offline", value=630.4)
    with pytest.raises(submission.SubmissionError, match="INVALID \\(min duration not met\\): not a result"):
        submission._valid(results_of(invalid), folder)
    invalid["loadgen"].update(validity="VALID", min_duration_met=True)
    (folder / "results.json").write_text(json.dumps(invalid))
    assert submission.finished(folder).loadgen.validity == "VALID" and submission.achieved(folder) == 0.0
    # an accuracy run whose detail log holds a LoadGen ERROR fails the checker's accuracy check
    accuracy = {"kind": "loadgen-accuracy", "loadgen": {"mode": "accuracy"}}
    (folder / "results.json").write_text(json.dumps(accuracy))
    (folder / "mlperf_log_detail.txt").write_text(
        ':::MLLOG {"key": "loadgen_version", "value": "6.0"}\n'
        ':::MLLOG {"key": "error_invalid_config", "value": "read twice", "metadata": {"is_error": true}}\n')
    assert submission.finished(folder) is None
    with pytest.raises(submission.SubmissionError, match="detail log holds LoadGen ERRORs \\(error_invalid_config"):
        submission._valid(results_of(accuracy), folder)


def test_a_run_that_ends_early_is_planned_again_once_at_the_rate_it_achieved(tmp_path, monkeypatch):
    """planned_run: an Offline performance run that ended before its minimum duration (it ran faster
    than planned, INVALID) is planned again at the samples/s it achieved, its user.conf saying so;
    a second early end is returned as it is (the caller refuses it)."""
    work = tmp_path / "Offline"
    work.mkdir()
    ran = []

    def fake_run(overrides, folder, *extra):
        rate = [650.0, 700.0, 800.0][len(ran)]
        ran.append((work / "user.conf").read_text())
        early = {"kind": "loadgen-performance", "loadgen": {
            "mode": "performance", "validity": "INVALID", "invalid_reason": "min duration not met",
            "early_stopping_result": None, "loadgen_errors": [], "scenario": "Offline", "min_duration_met": False,
            "value": rate}}
        folder.mkdir(exist_ok=True)
        (folder / "results.json").write_text(json.dumps(early))
        return results_of(early)

    monkeypatch.setattr(submission, "loadgen_run", fake_run)
    cfg = config("model=resnet50", "submission.submitter=T", "submission.system=S", name="submission")
    performance, args = submission.planned_run(cfg, [], work, "Offline", 500.0, "a test's rate")
    assert len(ran) == 2 and performance.loadgen.value == 700.0 and args[1] == f"loadgen.user_conf={work / 'user.conf'}"
    assert "resnet50.Offline.target_qps = 500.0" in ran[0] and "from a test's rate" in ran[0]
    assert "resnet50.Offline.target_qps = 650.0" in ran[1] and "which ended early" in ran[1]
    assert json.loads((work / "images_per_s.json").read_text())["images_per_s"] == 650.0


def test_the_offline_probe_is_loadgens_own_rate(fixture_graphs, tmp_path, monkeypatch):
    """The Offline plan's rate comes from a short Offline run of LoadGen itself (here 0.3 s, not
    30): its samples/s, a positive rate; its conf file plans at the guess for the probe's length."""
    monkeypatch.setattr(submission, "PROBE_MS", 300)
    overrides = dry_run_overrides(fixture_graphs, tmp_path)
    base = [*submission.child_overrides(overrides), "loadgen.scenario=Offline"]
    rate = submission.probed_qps(base, tmp_path / "runs" / "Offline" / "probe", 50.0)
    conf = (tmp_path / "runs" / "Offline" / "probe.user.conf").read_text()
    assert "*.Offline.target_qps = 50.0" in conf and "*.Offline.min_duration = 300" in conf
    assert rate > 0 and (tmp_path / "runs" / "Offline" / "probe" / "mlperf_log_detail.txt").is_file()


@pytest.mark.parametrize("p99_ms,late", [(3.0, 5), (6.0, 3), (7.0, 2), (10.0, 2), (10.5, None)])
def test_the_servers_plan_keeps_its_queries_within_the_bound(p99_ms, late, tmp_path, monkeypatch):
    """The Server's rate from a short Server run at a low rate: a query finding `late` others is late
    for MLPerf's 15 ms bound ((late + 1/2) s past it, s the probe's 99th-percentile latency), and
    the rate keeps the share of queries finding that many (rho ** late) at 1e-3; where a query finding
    one other running is already late, refused with the reason. Its user.conf holds the Server's line."""
    probes = []

    def fake_run(overrides, folder, *extra, probe=False):
        assert probe  # kept whatever its validity
        probes.append((overrides, folder, (folder.parent / "probe.user.conf").read_text()))
        return results_of({"kind": "loadgen-performance", "loadgen": {
            "mode": "performance", "scenario": "Server", "validity": "INVALID",
            "latency_ns": {"99.00_percentile": p99_ms * 1e6}}})

    monkeypatch.setattr(submission, "loadgen_run", fake_run)
    plan = lambda: submission.server_plan(["model=resnet50"], tmp_path / "probe", 15e6, 1000, 400.0)  # noqa: E731
    if late is None:
        with pytest.raises(submission.SubmissionError, match="one that finds another running is late for MLPerf's "
                                                             "Server bound of 15 ms"):
            plan()
        return
    qps, why = plan()
    rho = 1e-3 ** (1 / late)
    assert qps == pytest.approx(rho / (p99_ms / 1000)) and f"a query finding {late} others is late" in why
    (overrides, folder, conf), = probes
    assert overrides[-1] == "loadgen.scenario=Server" and "*.Server.target_qps = 20.0" in conf
    assert "*.Server.min_duration = 1000" in conf
    cfg = config("model=resnet50", "submission.submitter=T", "submission.system=S", name="submission")
    text = submission.user_conf(cfg, qps, why, "Server")
    assert f"resnet50.Server.target_qps = {qps:.1f}" in text and "Offline" not in text and why in text


def test_server_queries_that_queue_are_padded_to_the_next_compiled_size_not_the_batch_size():
    """A Server batch is compiled for at the powers of two below the batch size and padded to the next
    (two queued images padded to 8 took a Server query past its bound; a compiled form for every
    number would be a compile each before the run); MultiStream's rest, as before. The compiled model
    runs each batch at the smallest compiled size that holds it, the padding counted."""
    from types import SimpleNamespace

    import torch

    from benchmark.loadgen.run import query_batch_sizes
    from benchmark.nn.compiled import CompiledPerBatchSize

    assert query_batch_sizes("Server", 8, None) == {2, 4}
    assert query_batch_sizes("Server", 64, None) == {2, 4, 8, 16, 32}
    assert query_batch_sizes("Server", 2, None) == set() and query_batch_sizes("Server", 9, None) == {2, 4, 8}
    assert query_batch_sizes("Offline", 8, None) == set()
    assert query_batch_sizes("MultiStream", 3, SimpleNamespace(multi_stream_samples_per_query=8)) == {3, 2}

    class Sized(CompiledPerBatchSize):
        def compile(self, n):
            return n

        def run(self, n, x):
            assert len(x) == n  # every batch at a compiled size
            ran.append(n)
            return x.sum((1, 2, 3))

    model, ran = Sized(2), []
    model.sizes = {2, 4}
    x = torch.arange(8 * 3 * 4, dtype=torch.float32).reshape(8, 3, 2, 2)
    assert torch.equal(model(x), x.sum((1, 2, 3))) and ran == [8]  # the run's size
    for k, size in ((3, 4), (2, 2), (5, 8), (1, 1)):
        assert torch.equal(model(x[:k]), x[:k].sum((1, 2, 3))) and ran[-1] == size, (k, ran)
    assert model.padding == (4 - 3) + (8 - 5)


def test_the_closed_divisions_rules_are_refused_before_any_run(tmp_path, monkeypatch):
    """submission.division=closed: each rule named, before any run: MLPerf's ResNet-50 only (MobileNet
    has no closed benchmark now; a graph or a module is not MLPerf's model), its published checkpoint
    by md5 (a dry run lets any through), no transform, MLPerf's preprocessing, int8 calibrated on
    MLPerf's list, every scenario of the system type, TEST01 and TEST04."""
    root = write_layout(tmp_path / "val", "val_map", validation_images(8))
    ckpt = tmp_path / "resnet50_v1.pb"
    ckpt.write_bytes(b"not MLPerf's")
    base = ["model=resnet50", f"model.checkpoint={ckpt}", f"dataset.root={root}", f"submission.out={tmp_path / 'o'}",
            "submission.submitter=Tester", "submission.system=box", "submission.division=closed",
            "submission.system_type='datacenter,edge'", "submission.scenarios=[SingleStream,MultiStream,Offline,Server]",
            "submission.compliance=[TEST01,TEST04]", *(f"submission.system_desc.{k}={v}" for k, v in SYSTEM.items())]
    monkeypatch.setattr(submission, "loadgen_run", lambda *a, **k: pytest.fail(f"ran {a}"))

    def refused(*changes, message):
        overrides = [*base, *changes]
        with pytest.raises(ConfigError, match=message):
            submission.make(config(*overrides, name="submission"), overrides)

    refused(message="model.checkpoint=.*resnet50_v1.pb is not MLPerf's published checkpoint")
    # a file of a published md5 is MLPerf's: the next rule checked is the dataset's
    refused(f"model.published_md5=[{hashlib.md5(ckpt.read_bytes()).hexdigest()}]", message="lists 8 images")
    dry = "submission.dry_run=true"
    refused(dry, "model=mobilenet_v1", message="MobileNet has no closed benchmark in current MLPerf Inference rounds")
    refused(dry, "model=graph", message="model=graph is not MLPerf's model; the closed division runs MLPerf's ResNet")
    refused(dry, "model.transform=tests.transforms:bf16_weights", message="model.transform=.* changes the model")
    refused(dry, "preprocess=torchvision", message="the preprocessing departs from MLPerf's \\(decoder=pil")
    refused(dry, "preprocess.interpolation=linear", message="interpolation=linear \\(MLPerf's: area\\)")
    refused(dry, "precision=int8", f"calibration.list={tmp_path / 'mine.txt'}",
            message="a quantized model is calibrated on MLPerf's calibration list")
    refused(dry, "submission.scenarios=[SingleStream,MultiStream,Offline]", message=(
        "a system of type datacenter,edge submits SingleStream, MultiStream, Offline, Server; submission.scenarios "
        "lacks Server"))
    refused(dry, "submission.system_type=edge", "submission.scenarios=[Offline]",
            message="a system of type edge submits SingleStream, MultiStream, Offline")
    # MLPerf's datacenter suite has no image classification since v5.1: refused in either division
    refused(dry, "submission.system_type=datacenter", message="datacenter suite has had no image classification")
    refused(dry, "submission.system_type=datacenter", "submission.division=open",
            message="datacenter suite has had no image classification")
    refused(dry, "submission.compliance=[TEST01]", message="every scenario needs TEST01 and TEST04; "
                                                           "submission.compliance lacks TEST04")
    assert submission.required_scenarios("edge,datacenter") == ["SingleStream", "MultiStream", "Offline", "Server"]


@pytest.mark.slow
def test_a_closed_dry_run_holds_its_scenarios_and_both_compliance_tests(resnet_graphs, tmp_path, monkeypatch):
    """A closed dry run of MLPerf's ResNet-50 structure (random weights: the dry run lets any
    checkpoint through; an exported model, no TensorFlow in the runs): each scenario with its accuracy
    and performance runs, TEST01 and TEST04, under closed/. An edge system's three scenarios take
    13 LoadGen processes (over three minutes here): Offline alone is required in this test (the rule
    that all are is tested above; docs/submission.md has a whole edge dry run through the checker)."""
    monkeypatch.setitem(submission.REQUIRED_SCENARIOS, "edge", ("Offline",))
    from benchmark.convert import load_converted
    from benchmark.export import export
    from benchmark.formats.checkpoint import open_checkpoint

    ckpt = open_checkpoint(resnet_graphs(image_size=32))
    export(load_converted("resnet50", ckpt, None, None)[0], "resnet50", ckpt, tmp_path / "r.safetensors", {})
    root = write_layout(tmp_path / "val", "val_map", validation_images(32))
    overrides = ["model=resnet50", f"model.checkpoint={tmp_path / 'r.safetensors'}", f"dataset.root={root}",
                 f"cache_dir={tmp_path / 'cache'}", f"submission.out={tmp_path / 'out'}", "submission.submitter=Tester",
                 "submission.system=box", "submission.division=closed", "submission.system_type=edge",
                 "submission.scenarios=[Offline]", "submission.compliance=[TEST01,TEST04]",
                 "submission.dry_run=true", "submission.dry_run_duration_ms=100", "batch_size=8", "cpu_fusion=false",
                 *(f"submission.system_desc.{k}={v}" for k, v in SYSTEM.items())]
    results = submission.make(config(*overrides, name="submission"), overrides)
    assert results == tmp_path / "out" / "closed" / "Tester" / "results" / "box" / "resnet"
    for scenario in ("Offline",):
        files = {str(p.relative_to(results / scenario)) for p in (results / scenario).rglob("*") if p.is_file()}
        assert {"accuracy/accuracy.txt", "performance/run_1/mlperf_log_detail.txt", "TEST01/verify_accuracy.txt",
                "TEST01/verify_performance.txt", "TEST04/verify_performance.txt",
                "TEST04/performance/run_1/mlperf_log_summary.txt"} <= files, (scenario, sorted(files))
    system = json.loads((tmp_path / "out" / "closed" / "Tester" / "systems" / "box.json").read_text())
    assert system["division"] == "closed" and system["system_type"] == "edge"
    assert not (tmp_path / "out" / "closed" / "Tester" / "model_mapping.json").exists()


def test_an_int8_models_calibration_is_documented():
    from types import SimpleNamespace

    from benchmark.evaluation.results import Calibration

    c = Calibration(list="option_1", sha256="ab" * 32, mlperf_list="option_1", listed=500, note=None, images=500,
                    missing=[], unreadable=[], crops="", quantized_model="", reused=False, engine="onednn",
                    activation_bits=8, weight_bits=8, bias_correction=True, backend_config="onednn", seconds=1.0)
    text = submission._calibration(SimpleNamespace(calibration=c))
    assert text.startswith("# Calibration") and "500 images of MLPerf's calibration list option_1" in text
    assert "ab" * 32 in text and "no retraining" in text


def test_a_closed_accuracy_run_must_meet_mlperfs_target_without_reservations():
    from types import SimpleNamespace

    def run(passed, reservations=()):
        gate = SimpleNamespace(passed=passed, reservations=list(reservations), accuracy=76.1, target=75.695)
        return SimpleNamespace(gate=gate)

    assert submission.short_of_target(run(True)) is None
    assert submission.short_of_target(run(False)) == "76.1% against the target's 75.695%"
    assert "not MLPerf's checkpoint" in submission.short_of_target(run(True, ["not MLPerf's checkpoint"]))
    assert submission.short_of_target(SimpleNamespace(gate=None)) == "no MLPerf target recorded"
