"""MLPerf's TEST01 (`compliance/nvidia/TEST01`): are the answers a system gives in performance mode
the ones it gives in accuracy mode? An accuracy run, then a performance run with an audit config
that has LoadGen log a sample of its answers, then every logged answer compared with the accuracy
run's for the same sample. Batch-size or batch-content dependent numerics are the classic cause of
a failure (a Server run batches whatever arrives)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

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


TESTS = ("TEST01",)


def run(cfg: DictConfig) -> dict:
    if cfg.loadgen.compliance not in TESTS:
        raise ConfigError(f"loadgen.compliance={cfg.loadgen.compliance}: expected one of {', '.join(TESTS)}")
    return test01(cfg)


def test01(cfg: DictConfig) -> dict:
    lg = cfg.loadgen
    if lg.audit_conf:
        raise ConfigError("loadgen.compliance=TEST01 writes its own audit config; leave loadgen.audit_conf unset")
    # <model>-<scenario>-TEST01-<time>-<pid>
    folder = log_folder(cfg.loadgen.output_dir, cfg.model.name, replace(plan(cfg), mode="TEST01"))
    audit = folder / "audit.config"
    write_text_atomically(audit, AUDIT.format(seed=int(lg.test01.seed), target=int(lg.test01.sampling_target)))

    def mode(name: str, **loadgen) -> dict:
        run_cfg = OmegaConf.merge(cfg, {"loadgen": {"mode": name, "compliance": None,
                                                     "output_dir": str(folder / name), **loadgen},
                                        "results_file": None})
        return run_loadgen(run_cfg)

    accuracy = mode("accuracy")
    performance = mode("performance", audit_conf=str(audit))
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
