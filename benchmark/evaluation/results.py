"""A results file as one typed record: the run's facts, its scores, each comparison with another
model on the same crops, and the blocks of its kind; the schema version, and the one reader that
every command reading results goes through (benchmark.table and its report, mlperf_log --compare,
the submission).

Three kinds, told apart by the `kind` field (files written before it by which keys they hold):
"accuracy" (`python -m benchmark`: scores and every image's prediction), "loadgen-accuracy" (a
LoadGen accuracy run: the same, with its `loadgen` block) and "loadgen-performance" (LoadGen's
performance run: its facts and outcome, no prediction). A command given a kind it cannot read says
so, naming the file; a file of a newer schema than this harness writes is refused, not half read;
every older shape the harness wrote is upgraded on reading (tests/data/results holds one of each).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from preprocessing.errors import UserError

# 1: the files written before `schema_version` and `kind`; 2: the comparisons in two shapes (the
# exact model's scores as fp32_* keys); 3: one Comparison shape for the reference and exact fp32
SCHEMA_VERSION = 3
KINDS = {"accuracy": "an accuracy run's results (python -m benchmark)",
         "loadgen-accuracy": "a LoadGen accuracy run's results",
         "loadgen-performance": "a LoadGen performance run's results (its speed: no prediction)"}
WITH_PREDICTIONS = ("accuracy", "loadgen-accuracy")


class ResultsError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class RunFacts:
    """What was run, on what, with what: the fields every results file has, each resolved by the
    command that ran it (run.run_facts) and given here explicitly."""
    model: str
    arch: str
    judged_as: str  # the family whose MLPerf target applies (a module's: the one it ports)
    checkpoint: dict  # path, member, sha256
    image_size: int
    preprocess: dict  # every setting of the pipeline and the cache folder
    normalization: str
    backend: str
    device: str
    runtime_version: str | None  # the library that ran the model
    # what ran: the torch runtime's precision and the arithmetic read inside its forward; the other
    # runtimes run the model's float32 graph
    precision: str
    numerics: dict | None
    transform: dict | None
    batch_size: int
    fold_bn: bool | None  # folded by the harness (a user's module runs as it is: never); None: the graph's own
    cpu_fusion: bool | str | None
    cuda_graphs: bool | None
    threads: int
    distributed: dict | None
    dataset: dict
    skipped: list  # each image skipped as unreadable: its file and the reason
    conversion: dict | None
    config: dict  # the whole resolved config, as the command read it

    @property
    def judged(self) -> str:
        """The family whose MLPerf target applies (files written before judged_as: the arch)."""
        return self.judged_as or self.arch

    @classmethod
    def from_dict(cls, d: dict) -> RunFacts:
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Scores:
    """One model's scores on the images it read, as MLPerf counts them; the one projection of a
    scoring.Score into a file (the run's, the reference's, the exact fp32 model's)."""
    good: int
    total: int
    top5_good: int | None  # None: a file that recorded only the percentage

    @property
    def top1(self) -> float:
        return 100.0 * self.good / self.total

    @property
    def top5(self) -> float | None:
        return None if self.top5_good is None else 100.0 * self.top5_good / self.total

    @classmethod
    def of(cls, score) -> Scores:
        return cls(score.good, score.total, score.top5_good)

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "good": self.good, "top5_good": self.top5_good,
                "total": self.total}

    @classmethod
    def from_dict(cls, d: dict) -> Scores:
        top5_good = d.get("top5_good")
        if top5_good is None and d.get("top5") is not None:
            top5_good = round(d["top5"] * d["total"] / 100)
        return cls(d["good"], d["total"], top5_good)


def _record(cls, d: dict | None):
    """`d` as the record `cls` (its fields; a key the record does not know stays in the file's dict)."""
    if d is None:
        return None
    return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Verdict:
    """MLPerf's target for a model as a results file records it (gate.Gate.to_dict): whose target,
    its value, the accuracy as printed, the verdict, and why it is for reference only."""
    model: str
    target: float
    reference: float
    fraction: float
    accuracy: float
    passed: bool
    indicative: bool  # judged on fewer images than the whole validation set
    total: int
    reservations: list[str]


@dataclass(frozen=True)
class Calibration:
    """precision=int8's calibration as a results file records it (precision.calibrate)."""
    list: str  # the list's file (or MLPerf's option_1 / option_2)
    sha256: str
    mlperf_list: str | None  # option_1 / option_2 when the list is one of MLPerf's, unchanged
    listed: int
    note: str | None
    images: int  # the listed images found and read
    missing: list
    unreadable: list
    crops: str
    quantized_model: str
    reused: bool
    engine: str | None
    activation_bits: int | None
    weight_bits: int | None
    bias_correction: bool | None
    backend_config: str | None
    seconds: float | None


@dataclass(frozen=True)
class LoadGenBlock:
    """A LoadGen run as its results file records it (loadgen/run.py): the plan and what LoadGen
    reported; an accuracy run's log fields, or a performance run's outcome (None where the run's
    mode has none)."""
    scenario: str
    mode: str  # accuracy | performance
    log_dir: str
    val_map: str
    batch_sizes: list[int]
    padding: dict | None
    performance_sample_count: int
    settings: dict
    warm_up_images_per_s: float | None
    loadgen_version: str | None
    accuracy_log: str | None = None  # accuracy runs
    log_accuracy_line: str | None = None
    answered_again: int | None = None
    metric: str | None = None  # performance runs
    value: float | None = None
    unit: str | None = None
    validity: str | None = None
    invalid_reason: str | None = None
    early_stopping_met: bool | None = None
    early_stopping_result: str | None = None
    min_duration_met: bool | None = None
    min_queries_met: bool | None = None
    perf_constraints_met: bool | None = None
    query_count: int | None = None
    latency_ns: dict | None = None
    effective_settings: dict | None = None
    loadgen_errors: list | None = None
    loadgen_warnings: list | None = None
    summary: str | None = None


@dataclass(frozen=True)
class Comparison:
    """The run against another model on the same crops, image by image: the checkpoint itself in
    another runtime (`against` "reference", reference=) or the exact fp32 model (`against` "exact",
    precision= other than fp32, model.transform=). One shape for both; a field an upgraded older
    file did not record is None."""
    against: str  # "reference" | "exact"
    other: dict  # what the other model ran: reference: backend, tensor, checkpoint, device(s), version; exact: numerics
    scores: Scores  # the other model's
    calls: dict | None  # the other model's, image by image (scoring.Score.calls)
    agreement: int  # images both gave the same top-1
    disagreements: list[str] | None  # the files of the others
    fixed: int | None  # images the run gets right and the other wrong
    broken: int | None  # and the other way round
    fixed_images: list[str] | None
    broken_images: list[str] | None
    mcnemar_p: float | None
    # the other's top-1 logit minus its runner-up on each disagreement, and the margin under which
    # one is a near-tie (report.near_tie_margin)
    disagreement_margins: list[float] | None
    near_tie_margin: float | None
    near_ties: int | None
    max_abs_logit_diff: float
    logit_range: float | None  # the other's largest logit minus its smallest
    gate: Verdict | None  # MLPerf's target for the other model (exact fp32: with its own reservations)
    images_per_s: float | None  # the other's, after its first batch
    timing: dict | None

    def to_dict(self) -> dict:
        return {**asdict(self), "scores": self.scores.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Comparison:
        return cls(**{**{f.name: d.get(f.name) for f in fields(cls)}, "scores": Scores.from_dict(d["scores"]),
                      "gate": _record(Verdict, d.get("gate"))})


@dataclass(frozen=True)
class Results:
    """A results file as read: its kind, facts, scores (None for a performance run) and every block."""
    path: Path
    kind: str
    facts: RunFacts
    scores: Scores | None
    metrics: dict  # each metric's value as recorded, by name (evaluation/metrics.py computes the rest)
    predictions: list | None  # per listed image; None where it was skipped as unreadable
    images: list | None  # the file of each
    ground_truth: list | None
    calls: dict | None
    gate: Verdict | None  # MLPerf's target (None: a model MLPerf does not judge, or a performance run)
    real: dict | None  # ImageNet-ReaL's scores (labels.real=true)
    reference: Comparison | None
    exact: Comparison | None  # against the exact fp32 model
    calibration: Calibration | None
    loadgen: LoadGenBlock | None
    timing: dict | None
    data: dict  # the whole file, upgraded to this schema

    @property
    def accuracy_line(self) -> str | None:
        return self.data.get("accuracy_line")

    @property
    def versions(self) -> dict:
        """The libraries' versions the run recorded (report.library_versions)."""
        return self.data.get("versions") or {}

    @property
    def git(self) -> dict:
        """The harness's commit and whether its checkout held changes (None, None: an installed package)."""
        return self.data.get("git") or {}

    @classmethod
    def from_dict(cls, data: dict, path: Path | str) -> Results:
        """A file's dict (upgraded to this schema) as the record."""
        scored = data.get("good") is not None
        return cls(Path(path), data["kind"], RunFacts.from_dict(data), Scores.from_dict(data) if scored else None,
                   data.get("metrics") or {}, data.get("predictions"), data.get("images"), data.get("ground_truth"),
                   data.get("calls"), _record(Verdict, data.get("mlperf_target")), data.get("real"),
                   Comparison.from_dict(data["reference"]) if data.get("reference") else None,
                   Comparison.from_dict(data["against_exact"]) if data.get("against_exact") else None,
                   _record(Calibration, data.get("calibration")), _record(LoadGenBlock, data.get("loadgen")),
                   data.get("timing"), data)


def stamped(results: dict, kind: str) -> dict:
    """`results` with its schema version and kind first, as every writer writes them."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind}: expected one of {', '.join(KINDS)}")
    rest = {k: v for k, v in results.items() if k not in ("schema_version", "kind")}
    return {"schema_version": SCHEMA_VERSION, "kind": kind, **rest}


def kind_of(results: dict) -> str:
    """A file's kind: its field, or for a file written before it, read off the keys it holds."""
    if "kind" in results:
        return results["kind"]
    loadgen = results.get("loadgen") or {}
    if loadgen.get("mode") == "performance":
        return "loadgen-performance"
    return "loadgen-accuracy" if loadgen else "accuracy"


def _precision(results: dict) -> str:
    """The precision a run ran in: a string since schema 2's files; before, some held their
    comparison with fp32 there (a dict), and LoadGen runs only their config's."""
    recorded = results.get("precision")
    if isinstance(recorded, str):
        return recorded
    if isinstance(recorded, dict):
        return recorded.get("precision", "fp32")
    return str((results.get("config") or {}).get("precision", "fp32"))


def _differing(predictions: list | None, calls: dict | None, names: list | None) -> list[str] | None:
    """The images whose top-1 differs from the other model's (its calls' first class)."""
    if not (predictions and calls and names):
        return None
    return [n for n, p, c in zip(names, predictions, calls["top5"]) if p is not None and c is not None and p != c[0]]


def _flips(results: dict, calls: dict | None) -> dict:
    """fixed, broken, their images and McNemar's p of the run against another model's calls, from
    the file (a reference comparison of schema 2 did not record them)."""
    from benchmark.evaluation.significance import paired

    truth, predictions, names = results.get("ground_truth"), results.get("predictions"), results.get("images")
    if not (calls and truth and predictions and names):
        return {}
    both = [i for i, (p, c) in enumerate(zip(predictions, calls["top5"])) if p is not None and c is not None]
    flips = paired([truth[i] for i in both], [calls["top5"][i][0] for i in both], [predictions[i] for i in both],
                   [names[i] for i in both])
    return {k: flips[k] for k in ("fixed", "broken", "fixed_images", "broken_images", "mcnemar_p")}


def _reference_v3(results: dict, ref: dict) -> dict:
    """A schema 2 reference comparison in the one Comparison shape."""
    other = {k: ref[k] for k in ("backend", "tensor", "checkpoint", "device", "devices", "cpu_fusion", "version")
             if k in ref}
    return {"against": "reference", "other": other,
            "scores": {k: ref.get(k) for k in ("top1", "top5", "good", "top5_good", "total")},
            "calls": ref.get("calls"), "agreement": ref["agreement"], "disagreements": ref.get("disagreements"),
            **_flips(results, ref.get("calls")),
            **{k: ref.get(k) for k in ("disagreement_margins", "near_tie_margin", "near_ties", "max_abs_logit_diff",
                                       "logit_range", "timing")},
            "images_per_s": (ref.get("timing") or {}).get("eval_images_per_s")}


def _exact_v3(results: dict, c: dict) -> dict:
    """A schema 2 comparison with exact fp32 (its scores as fp32_* keys) in the one Comparison shape."""
    calls = c.get("fp32_calls")
    return {"against": "exact", "other": {"precision": "fp32", "numerics": c.get("fp32_numerics")},
            "scores": {"good": c["fp32_good"], "total": c["total"], "top5_good": None}, "calls": calls,
            "agreement": c["same_prediction"],
            "disagreements": _differing(results.get("predictions"), calls, results.get("images")),
            **{k: c.get(k) for k in ("fixed", "broken", "fixed_images", "broken_images", "mcnemar_p",
                                     "max_abs_logit_diff")},
            "gate": (c.get("mlperf_target") or {}).get("fp32"), "images_per_s": c.get("fp32_images_per_s")}


def upgraded(results: dict, path: Path | str) -> dict:
    """`results` as the current schema has it: an older file gains its version and kind, its
    precision as a string and its comparisons in the one shape; a newer one is refused."""
    version = results.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ResultsError(f"{path}: results of schema version {version}, newer than this harness reads "
                           f"({SCHEMA_VERSION}): read it with the version that wrote it, or update the harness")
    results = stamped(results, kind_of(results))
    if version < 3:
        results["precision"] = _precision(results)
        # each in the one shape, every field present (None: not recorded, not derivable)
        if results.get("reference"):
            results["reference"] = Comparison.from_dict(_reference_v3(results, results["reference"])).to_dict()
        if results.get("against_exact"):
            results["against_exact"] = Comparison.from_dict(_exact_v3(results, results["against_exact"])).to_dict()
    return results


def read_results(path: Path | str, kinds: tuple[str, ...] = WITH_PREDICTIONS, command: str = "this command") -> Results:
    """The results file at `path`, upgraded; a clear error for a file that is not JSON, not a results
    file, of a newer schema, or of a kind `command` does not read (`kinds`)."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: not a readable results file ({e})") from e
    if not isinstance(results, dict) or not ({"kind", "checkpoint"} & results.keys()):
        raise ResultsError(f"{path}: not a results file of the harness (no kind, no checkpoint)")
    results = upgraded(results, path)
    if results["kind"] not in kinds:
        raise ResultsError(f"{path}: {KINDS.get(results['kind'], results['kind'])}; {command} reads "
                           f"{' or '.join(KINDS[k] for k in kinds)}")
    return Results.from_dict(results, path)
