"""`python -m benchmark.mlperf_log`: any MLPerf accuracy log scored as MLPerf's accuracy-imagenet.py
scores it, compared with a harness run, and every malformed input a clear error naming the entry."""

import json
import math

import numpy as np
import pytest

from benchmark.evaluation.accuracy_log import LogError, compare_with_run, read_labels, score, score_file
from benchmark.evaluation.results import read_results
from benchmark.mlperf_log import main

LABELS = [(f"ILSVRC2012_val_{i + 1:08d}.JPEG", label) for i, label in enumerate([65, 970, 230, 809, 516, 57, 334, 415, 674, 332])]


def entry(idx, value, dtype=np.float32, seq=0):
    return {"seq_id": seq, "qsl_idx": idx, "data": np.array([value], dtype).tobytes().hex()}


def write(tmp_path, entries, labels=LABELS, name="mlperf_log_accuracy.json"):
    log = tmp_path / name
    log.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    (tmp_path / "val_map.txt").write_text("".join(f"{n} {label}\n" for n, label in labels))
    return log


def test_scores_like_mlperfs_tool():
    # 0, 1, 3 right; 2 wrong; 4 background (-1); 5 answered right twice; 6 right, then wrong (first counts)
    entries = [entry(0, 65), entry(1, 970), entry(2, 231), entry(3, 809), entry(4, -1), entry(5, 57),
               entry(5, 57), entry(6, 334), entry(6, 1)]
    s = score(entries, LABELS)
    assert (s.good, s.total, s.entries, s.duplicates) == (5, 7, 9, 2)
    assert s.mlperf_line() == "accuracy=71.429%, good=5, total=7"
    assert s.conflicting == [6] and s.missing == [7, 8, 9]
    assert s.answers[4] == -1 and s.answers[6] == 334


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_dtypes(dtype):
    name = np.dtype(dtype).name
    entries = [entry(i, label, dtype) for i, (_, label) in enumerate(LABELS)]
    assert score(entries, LABELS, name).good == 10
    assert score(entries, LABELS).dtype == name and score(entries, LABELS).good == 10  # detected
    wrong = "int32" if dtype is np.float32 else "float32"
    # read as float32, int32 answers are denormals (MLPerf's tool truncates them to class 0: 0.1 %
    # accuracy, no error); read as int32, float32 answers are numbers far beyond the classes
    with pytest.raises(LogError, match=f"the answer read as {wrong} is .*, not a class .*--dtype"):
        score(entries, LABELS, wrong)


def test_float_answers_are_truncated_as_mlperfs_tool_does():
    assert score([entry(0, 65.7)], LABELS).good == 1


@pytest.mark.parametrize("content,message", [
    ('[{"seq_id": 0, "qsl_idx": 0, "data": "0000', "not JSON"),
    ('{"qsl_idx": 0}', "expected a JSON list of LoadGen entries, got dict"),
    ("[]", "the log has no entries"),
    ([entry(0, 65), {"seq_id": 1, "data": "00"}], "entry 1: expected an object with 'qsl_idx' and 'data'"),
    ([entry(0, 65), {"qsl_idx": 1, "data": "zz00aa11"}], r"entry 1 \(qsl_idx 1\): data 'zz00aa11' is not hex"),
    ([{"qsl_idx": 2, "data": "0000"}], r"entry 0 \(qsl_idx 2\): 2 bytes of data are not whole float32 values"),
    ([entry(10, 5)], r"entry 0: qsl_idx 10 is not a line of the labels list \(0..9\)"),
    ([entry(-1, 5)], "entry 0: qsl_idx -1 is not a line"),
    ([{"qsl_idx": "3", "data": "00000000"}], "entry 0: qsl_idx '3' is not a line"),
    ([entry(3, math.nan)], r"entry 0 \(qsl_idx 3\): the answer read as float32 is nan, not a class"),
    ([entry(3, 1000)], r"entry 0 \(qsl_idx 3\): the answer read as float32 is 1000.0, not a class \(-1..999\)"),
])
def test_malformed_logs(tmp_path, content, message):
    log = write(tmp_path, content)
    with pytest.raises(LogError, match=message):
        score_file(log, tmp_path / "val_map.txt")
    assert str(log) in str(pytest.raises(LogError, score_file, log, tmp_path / "val_map.txt").value)


def test_malformed_labels(tmp_path):
    path = tmp_path / "val_map.txt"
    path.write_text("a.JPEG 1\nb.JPEG\n")
    with pytest.raises(LogError, match="val_map.txt:2: expected '<file> <label>'"):
        read_labels(path)
    with pytest.raises(LogError, match="cannot read the labels list"):
        read_labels(tmp_path / "absent.txt")


def test_cli_reports_duplicates_and_missing_samples(tmp_path, capsys):
    log = write(tmp_path, [entry(0, 65), entry(0, 66), entry(1, 970)])
    assert main([str(log)]) == 0  # val_map.txt beside the log
    out, err = capsys.readouterr()
    assert out.splitlines() == ["accuracy=100.000%, good=2, total=2",
                                "mlperf target: not judged (give --model mobilenet_v1 or resnet50)"]
    assert "3 entries (float32), 1 duplicates counted once (1 answered differently the second time: ILSVRC2012_val_00000001.JPEG)" in err
    assert "8 of the 10 listed samples are not in the log: ILSVRC2012_val_00000003.JPEG" in err


def test_cli_defaults_to_mlperfs_val_map_for_a_whole_set_log_only(tmp_path, capsys):
    """Without --labels or a val_map.txt beside it, a log over MLPerf's 50,000 images is read against
    MLPerf's val_map; a log of fewer samples is of a subset run, whose qsl_idx index its own list:
    read against MLPerf's they would point at other images, so it is refused."""
    from preprocessing.dataset import imagenet_val_map

    labels = list(imagenet_val_map().values())
    log = tmp_path / "sub" / "mlperf_log_accuracy.json"
    log.parent.mkdir()
    log.write_text(json.dumps([entry(i, label if i else 0) for i, label in enumerate(labels)]))
    assert main([str(log)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "accuracy=99.998%, good=49999, total=50000"
    log.write_text(json.dumps([entry(0, 65), entry(49_999, 355), entry(1, 0)]))  # MLPerf's first, last labels
    assert main([str(log)]) == 2
    assert "the log answers 3 samples, not the 50,000 of MLPerf's val_map.txt" in capsys.readouterr().err


def test_cli_errors_name_the_entry(tmp_path, capsys):
    log = write(tmp_path, [entry(0, 65), {"qsl_idx": 1, "data": "xyz"}])
    assert main([str(log), "--labels", str(tmp_path / "val_map.txt")]) == 2
    assert f"error: {log}: entry 1 (qsl_idx 1): data 'xyz' is not hex" in capsys.readouterr().err


def test_compare_with_a_run(tmp_path, capsys):
    answers = [65, 1, 230, 2, 3, 57]  # 1: log wrong; 3: both wrong, differently; 4: both wrong, the same
    run = [65, 970, 5, 4, 3, 57, None, 415]  # 2: run wrong; 6 skipped in the run; 7 only in the run
    log = write(tmp_path, [entry(i, a) for i, a in enumerate(answers)])
    results = tmp_path / "run.json"
    results.write_text(json.dumps({"kind": "accuracy", "images": [n for n, _ in LABELS[:8]], "predictions": run}))
    c = compare_with_run(score_file(log, tmp_path / "val_map.txt"), LABELS, read_results(results))
    assert [r["image"][-10:-5] for r in c["log_wrong_run_right"]] == ["00002"]
    assert c["log_wrong_run_right"][0] == {"image": LABELS[1][0], "label": 970, "log": 1, "run": 970}
    assert [r["image"][-10:-5] for r in c["log_right_run_wrong"]] == ["00003"]
    assert [r["image"][-10:-5] for r in c["both_wrong_differently"]] == ["00004"]
    assert c["compared"] == 6 and c["same_answer"] == 3
    assert c["in_log_not_in_run"] == [] and c["in_run_not_in_log"] == [LABELS[7][0]]
    assert main([str(log), "--compare", str(results)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2] == f"compared with {results}: 6 images in both, 3 answered the same"
    assert "1 the log gets wrong, the run right:" in out
    assert f"  {LABELS[1][0]}: label 970, log 1, run 970" in out
    results.write_text(json.dumps({"kind": "accuracy", "predictions": run}))
    assert main([str(log), "--compare", str(results)]) == 2
    assert "no 'images' and 'predictions'" in capsys.readouterr().err
    results.write_text(json.dumps({"kind": "loadgen-performance", "loadgen": {"mode": "performance"}}))
    assert main([str(log), "--compare", str(results)]) == 2
    assert "a LoadGen performance run's results (its speed: no prediction); mlperf_log --compare reads an " \
           "accuracy run's results" in capsys.readouterr().err


def test_a_module_run_is_judged_as_the_model_it_ports(tmp_path, capsys):
    """A model=module run records arch "module": the log is judged as the family it ports (judged_as),
    with the run's reservations kept (the fault: "mlperf target: not judged", or no reservation)."""
    log = write(tmp_path, [entry(i, label) for i, (_, label) in enumerate(LABELS)])
    results = tmp_path / "run.json"
    why = "the model is your module tests.ports:MobileNetV1Port, not MLPerf's conversion of its checkpoint"
    results.write_text(json.dumps({"kind": "accuracy", "images": [n for n, _ in LABELS],
                                   "predictions": [label for _, label in LABELS],
                                   "arch": "module", "judged_as": "mobilenet_v1",
                                   "mlperf_target": {"reservations": [why]}}))
    assert main([str(log), "--compare", str(results)]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("mlperf target 70.246% (MLPerf's MobileNet-v1 1.0/224: 98% of 71.68)") and why in line
