"""MLPerf's compliance tests.

TEST01 (`compliance/nvidia/TEST01`): are the answers a system gives in performance mode the ones it
gives in accuracy mode? An accuracy run, then a performance run with an audit config that has
LoadGen log a sample of its answers, then every logged answer compared with the accuracy run's for
the same sample. Batch-size or batch-content dependent numerics are the classic cause of a failure
(a Server run batches whatever arrives).

TEST04 (`compliance/TEST04`): does the system cache answers? A performance run, then one that issues
the same sample over and over (LoadGen's `performance_issue_same`); a system that answers a sample
it has seen from a cache runs the second far faster. The verdict is MLPerf's `verify_performance.py`
rule on the two summaries: the test's score (samples/s, or one over the early-stopping latency
estimate) under the performance run's times 1.1 (1.2 for Single/MultiStream)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from benchmark.evaluation.accuracy_log import read_labels, read_log, same_answers
from benchmark.loadgen.run import log_folder
from benchmark.loadgen.run import run as run_loadgen
from benchmark.loadgen.settings import plan
from preprocessing.errors import ConfigError
from preprocessing.files import write_text_atomically

AUDIT = """# TEST01, written by the harness: performance mode with a sample of the answers logged
*.*.mode = 2
*.*.accuracy_log_rng_seed = {seed}
*.*.accuracy_log_sampling_target = {target}
"""


# MLPerf's compliance/TEST04/audit.config, for every scenario: performance mode, sample 3 issued again
# and again in place of the run's own samples
AUDIT_TEST04 = """# TEST04, written by the harness: the same sample issued in every query
*.*.mode = 2
*.*.performance_issue_unique = 0
*.*.performance_issue_same = 1
*.*.performance_issue_same_index = 3
"""

TESTS = ("TEST01", "TEST04")


def run(cfg: DictConfig) -> dict:
    if cfg.loadgen.compliance not in TESTS:
        raise ConfigError(f"loadgen.compliance={cfg.loadgen.compliance}: expected one of {', '.join(TESTS)}")
    return test01(cfg) if cfg.loadgen.compliance == "TEST01" else test04(cfg)


# the summary's line holding each scenario's score, as MLPerf's verification matches it
SCORE_LINES = {"Offline": re.compile(r"Samples per second"), "Server": re.compile(r"Completed samples per second"),
               "SingleStream": re.compile(r".*Early stopping (90th|90\.0th|99\.9th) percentile estimate"),
               "MultiStream": re.compile(r".*Early stopping (99th|99\.0th) percentile estimate")}


def summary_score(summary: str) -> tuple[str, float, bool]:
    """(scenario, score, valid) of a LoadGen summary as MLPerf's TEST04 verification reads it: Offline's
    samples/s, the Server's completed samples/s, Single/MultiStream's 1e9 over the early-stopping
    latency estimate in ns (90th percentile, 99th for MultiStream)."""
    scenario, score, valid = "", None, True
    for line in summary.splitlines():
        value = line.split(": ", 1)[1].strip() if ": " in line else ""
        if line.startswith("Scenario"):
            scenario = value
        elif line.startswith("Result is"):
            valid = value == "VALID"
        elif scenario in SCORE_LINES and SCORE_LINES[scenario].match(line) and value:
            score = float(value) if scenario in ("Offline", "Server") else 1e9 / float(value)
    if score is None:
        raise ValueError(f"a LoadGen summary of scenario {scenario or '?'} without its score")
    return scenario, score, valid


def verify_test04(reference_summary: str, test_summary: str) -> tuple[bool, str]:
    """TEST04's verdict on the performance run's and the test's summaries, and the text MLPerf's
    verify_performance.py prints (its last line `TEST PASS` or `TEST FAIL: ...`)."""
    scenario, ref, ref_valid = summary_score(reference_summary)
    test_scenario, got, test_valid = summary_score(test_summary)
    lines = ["Verifying performance.", f"reference score = {ref}", f"test score = {got}"]
    if not ref_valid:
        return False, "\n".join([*lines, "TEST FAIL: Reference results are invalid"]) + "\n"
    if not test_valid:
        return False, "\n".join([*lines, "TEST FAIL: Test results are invalid"]) + "\n"
    if scenario != test_scenario:
        return False, "\n".join([*lines, "TEST FAIL: Test and reference scenarios do not match"]) + "\n"
    threshold = 0.20 if (scenario == "SingleStream" and ref <= 200_000) or (
        scenario == "MultiStream" and ref <= 1_600_000) else 0.10
    passed = got < ref * (1 + threshold)
    lines.append(f"threshold = {threshold:.2f}")
    return passed, "\n".join([*lines, "TEST PASS" if passed else "TEST FAIL: Test score invalid"]) + "\n"


def _audited(cfg: DictConfig, test: str, audit_text: str) -> tuple[Path, Path, Callable[..., dict]]:
    """A compliance test's log folder (<model>-<scenario>-<test>-<time>-<pid>), its audit config
    written there, and the function running one of its LoadGen runs (`name`: its folder) in it."""
    if cfg.loadgen.audit_conf:
        raise ConfigError(f"loadgen.compliance={test} writes its own audit config; leave loadgen.audit_conf unset")
    folder = log_folder(cfg.loadgen.output_dir, cfg.model.name, replace(plan(cfg), mode=test))
    audit = folder / "audit.config"
    write_text_atomically(audit, audit_text)

    def run(name: str, mode: str, **loadgen) -> dict:
        run_cfg = OmegaConf.merge(cfg, {"loadgen": {"mode": mode, "compliance": None,
                                                     "output_dir": str(folder / name), **loadgen},
                                        "results_file": None})
        return run_loadgen(run_cfg)

    return folder, audit, run


def test04(cfg: DictConfig) -> dict:
    folder, audit, run = _audited(cfg, "TEST04", AUDIT_TEST04)
    run("performance", "performance")
    run("TEST04", "performance", audit_conf=str(audit))
    passed, text = verify_test04((folder / "performance" / "mlperf_log_summary.txt").read_text(),
                                 (folder / "TEST04" / "mlperf_log_summary.txt").read_text())
    write_text_atomically(folder / "verify_performance.txt", text)
    print(f"TEST04 {'PASS' if passed else 'FAIL'}: " + "; ".join(text.splitlines()[1:3]))
    print(f"TEST04 logs: {folder}", file=sys.stderr)
    result = {"test": "TEST04", "passed": passed, "audit_config": str(audit), "verify_performance": text,
              "performance_log_dir": str(folder / "performance"), "test_log_dir": str(folder / "TEST04")}
    write_text_atomically(folder / "TEST04.json", json.dumps(result, indent=1))
    return result


def test01(cfg: DictConfig) -> dict:
    lg = cfg.loadgen
    folder, audit, run = _audited(cfg, "TEST01", AUDIT.format(seed=int(lg.test01.seed),
                                                             target=int(lg.test01.sampling_target)))
    accuracy = run("accuracy", "accuracy")
    performance = run("performance", "performance", audit_conf=str(audit))
    check = same_answers(read_log(folder / "accuracy" / "mlperf_log_accuracy.json"),
                         read_log(folder / "performance" / "mlperf_log_accuracy.json"))
    # sample k is the k-th readable image: the accuracy run's val_map.txt lists them in LoadGen's order
    # (the results' "images" list every listed one, the unreadable too)
    names = [name for name, _ in read_labels(accuracy["loadgen"]["val_map"])]
    for d in check["differing"]:
        d["image"] = names[d["qsl_idx"]]
        d["performance_answer"], d["accuracy_answer"] = (
            np.frombuffer(bytes.fromhex(d[k]), np.float32).tolist() for k in ("performance", "accuracy"))
    verdict = "TEST01 PASS" if check["passed"] else "TEST01 FAIL"
    print(f"{verdict}: {check['same']} of {check['logged']} answers logged in performance mode equal the "
          f"accuracy run's, {len(check['differing'])} differ" + (
              f" ({', '.join(d['image'] for d in check['differing'][:10])})" if check["differing"] else "")
          + (f"; {check['not_in_accuracy_log']} not in the accuracy log" if check["not_in_accuracy_log"] else ""))
    print(f"TEST01 logs: {folder}", file=sys.stderr)
    result = {"test": "TEST01", "passed": check["passed"], "audit_config": str(audit),
              "accuracy_log_dir": str(folder / "accuracy"), "performance_log_dir": str(folder / "performance"),
              **check, "performance": performance["loadgen"]}
    write_text_atomically(folder / "TEST01.json", json.dumps(result, indent=1))
    return result
