"""The `loadgen` config group checked and turned into LoadGen's TestSettings, and LoadGen's detail log
read back for a run's outcome."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from preprocessing.errors import ConfigError

SCENARIOS = ("SingleStream", "MultiStream", "Offline", "Server")
MODES = {"accuracy": "AccuracyOnly", "performance": "PerformanceOnly"}
# MLPerf's query sample library size for both ImageNet models (its rules; mlperf.conf for ResNet-50).
PERFORMANCE_SAMPLE_COUNT = 1024

# Which overrides apply where, and the TestSettings field each sets (times in ns are converted).
OVERRIDES = {
    "min_duration_ms": {s: "min_duration_ms" for s in SCENARIOS},
    "min_query_count": {s: "min_query_count" for s in SCENARIOS},
    "target_qps": {"Offline": "offline_expected_qps", "Server": "server_target_qps"},
    "target_latency_ms": {"SingleStream": "single_stream_expected_latency_ns",
                          "MultiStream": "multi_stream_expected_latency_ns",
                          "Server": "server_target_latency_ns"},
    "samples_per_query": {"MultiStream": "multi_stream_samples_per_query"},
}
INTEGERS = {"min_duration_ms", "min_query_count", "samples_per_query", "performance_sample_count"}


@dataclass
class LoadGenPlan:
    """The checked `loadgen` settings of one run."""
    scenario: str
    mode: str
    mlperf_conf: Path | None
    user_conf: Path | None
    audit_conf: Path | None
    overrides: dict  # override name -> value, the ones set
    performance_sample_count: int | None  # as asked for; None: the conf files' or MLPerf's

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "mode": self.mode,
                "mlperf_conf": str(self.mlperf_conf) if self.mlperf_conf else "built into LoadGen",
                "user_conf": str(self.user_conf) if self.user_conf else None,
                "audit_conf": str(self.audit_conf) if self.audit_conf else None,
                "overrides": self.overrides}


def _conf_file(lg: DictConfig, key: str) -> Path | None:
    value = lg.get(key)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"loadgen.{key}={value}: file not found")
    return path


def plan(cfg: DictConfig) -> LoadGenPlan:
    """Every `loadgen.*` setting checked before anything is loaded or LoadGen starts."""
    lg = cfg.loadgen
    if lg.scenario not in SCENARIOS:
        raise ConfigError(f"loadgen.scenario={lg.scenario}: expected one of {', '.join(SCENARIOS)}")
    if lg.mode not in MODES:
        raise ConfigError(f"loadgen.mode={lg.mode}: expected accuracy or performance")
    overrides = {}
    for key in [*OVERRIDES, "performance_sample_count"]:
        value = lg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                key in INTEGERS and not float(value).is_integer()):
            raise ConfigError(f"loadgen.{key}={value}: expected a {'whole ' if key in INTEGERS else ''}number")
        if value <= 0:
            raise ConfigError(f"loadgen.{key}={value}: must be greater than zero")
        if key in OVERRIDES and lg.scenario not in OVERRIDES[key]:
            raise ConfigError(f"loadgen.{key} applies to {', '.join(OVERRIDES[key])}, "
                              f"not loadgen.scenario={lg.scenario}")
        if key in OVERRIDES:
            overrides[key] = int(value) if key in INTEGERS else float(value)
    count = lg.get("performance_sample_count")
    return LoadGenPlan(lg.scenario, lg.mode, _conf_file(lg, "mlperf_conf"), _conf_file(lg, "user_conf"),
                       _conf_file(lg, "audit_conf"), overrides, int(count) if count is not None else None)


# Keys LoadGen reads from its built-in mlperf.conf only: a file given to FromConfig (conf_type 2) has
# them ignored (as in a user.conf, where MLPerf's rules forbid them). The harness applies them from
# the user's mlperf.conf itself: (TestSettings field, scale; bool for flags).
MLPERF_CONF_ONLY = {
    "qsl_rng_seed": ("qsl_rng_seed", int), "sample_index_rng_seed": ("sample_index_rng_seed", int),
    "schedule_rng_seed": ("schedule_rng_seed", int),
    "accuracy_log_probability": ("accuracy_log_probability", lambda v: float(v) * 0.01),  # a percentage
    "test05": ("test05", lambda v: int(float(v)) == 1), "test05_qsl_rng_seed": ("test05_qsl_rng_seed", int),
    "test05_sample_index_rng_seed": ("test05_sample_index_rng_seed", int),
    "test05_schedule_rng_seed": ("test05_schedule_rng_seed", int),
}


def conf_values(path: Path, model: str, scenario: str) -> dict[str, str]:
    """`key -> value` for `model` and `scenario` from a LoadGen conf file, looked up as LoadGen does:
    model.scenario.key, then *.scenario.key, then model.*.key, then *.*.key."""
    entries = {}
    for line in Path(path).read_text().splitlines():
        tokens = line.split()
        if len(tokens) >= 3 and not tokens[0].startswith("#") and tokens[1] == "=":
            entries[tokens[0]] = tokens[2]
    found = {}
    for pattern in ("*.*.", f"{model}.*.", f"*.{scenario}.", f"{model}.{scenario}."):  # the last one found wins
        found.update({k[len(pattern):]: v for k, v in entries.items()
                      if k.startswith(pattern) and "." not in k[len(pattern):]})
    return found


def make_test_settings(lgm, p: LoadGenPlan, model: str, sample_count: int):
    """LoadGen's TestSettings: mlperf.conf (LoadGen's own unless given), then user.conf, then the
    overrides. Returns (settings, the QSL's performance sample count)."""
    settings = lgm.TestSettings()
    # conf_type 0 is LoadGen's built-in mlperf.conf, 2 a file read as is. (Type 1, "user.conf", would
    # read the built-in file again first, and only once per process.)
    if settings.FromConfig("", model, p.scenario, 0) != 0:
        raise ConfigError("LoadGen could not read its built-in mlperf.conf")
    for key, path in (("mlperf_conf", p.mlperf_conf), ("user_conf", p.user_conf)):
        if path is not None and settings.FromConfig(str(path), model, p.scenario, 2) != 0:
            raise ConfigError(f"loadgen.{key}={path}: LoadGen cannot read it (expected lines "
                              f"'model.scenario.key = number')")
        if key == "mlperf_conf" and path is not None:
            for name, value in conf_values(path, model, p.scenario).items():
                if name in MLPERF_CONF_ONLY:
                    field, convert = MLPERF_CONF_ONLY[name]
                    setattr(settings, field, convert(value))
    settings.scenario = getattr(lgm.TestScenario, p.scenario)
    settings.mode = getattr(lgm.TestMode, MODES[p.mode])
    for key, value in p.overrides.items():
        field = OVERRIDES[key][p.scenario]
        setattr(settings, field, int(value * 1_000_000) if field.endswith("_ns") else value)
    if p.performance_sample_count is not None:
        if p.performance_sample_count > sample_count:
            raise ConfigError(f"loadgen.performance_sample_count={p.performance_sample_count} is more than "
                              f"the {sample_count} images of the dataset")
        count = p.performance_sample_count
    else:  # the conf files' value (mlperf.conf sets ResNet-50's), at most the dataset
        count = min(settings.performance_sample_count_override or PERFORMANCE_SAMPLE_COUNT, sample_count)
    settings.performance_sample_count_override = count
    return settings, count


def read_detail_log(path: Path) -> dict:
    """LoadGen's detail log (`:::MLLOG {json}` lines) as key -> value, with its errors and warnings."""
    values, errors, warnings = {}, [], []
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG "):])
        except json.JSONDecodeError:
            continue  # a line cut short by a run that died; the rest still tells what happened
        values[entry["key"]] = entry.get("value")
        meta = entry.get("metadata") or {}
        if meta.get("is_error"):
            errors.append(f"{entry['key']}: {entry.get('value')}")
        elif meta.get("is_warning"):
            warnings.append(f"{entry['key']}: {entry.get('value')}")
    return {"values": values, "errors": errors, "warnings": warnings}


def _percentile_key(values: dict, per_query: bool) -> str:
    p = 100 * float(values.get("effective_target_latency_percentile", 0.9))
    return f"result_{p:.2f}_percentile_{'per_query_' if per_query else ''}latency_ns"


def outcome(detail: dict, scenario: str) -> dict:
    """A performance run's outcome as LoadGen reports it: the scenario's metric, VALID or INVALID and
    why, and the settings LoadGen actually used (after both conf files and the overrides)."""
    v = detail["values"]
    if scenario == "Offline":
        name, key, unit = "samples_per_second", "result_samples_per_second", "samples/s"
    elif scenario == "Server":
        name, key, unit = "scheduled_samples_per_second", "result_scheduled_samples_per_sec", "samples/s"
    elif scenario == "SingleStream":
        key = _percentile_key(v, per_query=False)
        name, unit = key[len("result_"):-len("_ns")], "ns"
    else:
        key = _percentile_key(v, per_query=True)
        name, unit = key[len("result_"):-len("_ns")], "ns"
    return {
        "metric": name, "value": v.get(key), "unit": unit,
        "validity": v.get("result_validity"),
        "invalid_reason": (v.get("result_invalid_reason") or "").strip() or None,
        "min_duration_met": v.get("result_min_duration_met"),
        "min_queries_met": v.get("result_min_queries_met"),
        "early_stopping_met": v.get("early_stopping_met"),
        "early_stopping_result": (v.get("early_stopping_result") or "").strip() or None,
        "perf_constraints_met": v.get("result_perf_constraints_met"),
        "query_count": v.get("result_query_count"),
        "latency_ns": {k[len("result_"):-len("_latency_ns")]: val for k, val in v.items()
                       if k.startswith("result_") and k.endswith("_latency_ns")},
        "effective_settings": {k[len("effective_"):]: val for k, val in v.items() if k.startswith("effective_")},
        "loadgen_errors": detail["errors"],
        "loadgen_warnings": detail["warnings"],
    }
