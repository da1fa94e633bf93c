"""One submission: every LoadGen run it needs, each in a process and a folder of its own, then the
folder in the checker's layout (package.py), resumable run by run.

Why a process per run: LoadGen reads its configuration once per process (a second read is an ERROR in
the detail log, which fails the accuracy check), and reads `audit.config` from the current folder
(a file left by a compliance run turns a later run into an audit run): each run starts in a fresh,
empty folder with its audit config, if any, given by path.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from benchmark import runtimes
from benchmark.evaluation.results import KINDS, Results, read_results
from benchmark.families import family, judged_as, mlperf_departures
from benchmark.submission import package
from benchmark.submission.system import STATUSES, SYSTEM_TYPES, description, machine
from preprocessing.errors import ConfigError, UserError
from preprocessing.files import write_text_atomically

WHOLE_SET = 50_000
SCENARIOS = ("SingleStream", "MultiStream", "Offline", "Server")
TESTS = ("TEST01", "TEST04")
# Paths a run reads, made absolute for runs that start in a folder of their own.
PATH_KEYS = ("dataset.root", "dataset.labels", "model.checkpoint", "cache_dir", "checkpoint_dir", "calibration.list",
             "reference_checkpoint", "loadgen.mlperf_conf")
INCOMPLETE = "INCOMPLETE"  # benchmark.loadgen's mark of a run that did not finish
DRY_RUN_MARK = "DRY_RUN_NOT_A_SUBMISSION.txt"
DRY_RUN_SERVER_QUERIES = 1500


class SubmissionError(UserError, RuntimeError):
    """A run that failed or is not a result (an INVALID performance run), naming its folder."""


def check(cfg: DictConfig) -> None:
    """What the checker would reject, or what is not a submission, refused before any run."""
    sub = cfg.submission
    if sub.division not in ("open", "closed"):
        raise ConfigError(f"submission.division={sub.division}: expected open or closed")
    if sub.status not in STATUSES or sub.system_type not in SYSTEM_TYPES:
        raise ConfigError(f"submission.status={sub.status}, submission.system_type={sub.system_type}: expected "
                          f"{' | '.join(STATUSES)} and {' | '.join(SYSTEM_TYPES)}")
    if sub.system_type == "datacenter":  # every model of the harness is submitted as the resnet task
        raise ConfigError("submission.system_type=datacenter: MLPerf Inference's datacenter suite has had no image "
                          f"classification since v5.1 (the checker of submission.round={sub.round} requires ResNet-50 "
                          "of edge systems only): submission.system_type=edge, or datacenter,edge (all four "
                          "scenarios, Server among them)")
    if sub.division == "closed":
        closed_rules(cfg)
    unknown = [s for s in sub.scenarios if s not in SCENARIOS]
    if unknown or not sub.scenarios:
        raise ConfigError(f"submission.scenarios={list(sub.scenarios)}: expected some of {', '.join(SCENARIOS)}")
    if [t for t in sub.compliance if t not in TESTS]:
        raise ConfigError(f"submission.compliance={list(sub.compliance)}: the harness runs {', '.join(TESTS)}")
    for key in ("submitter", "system"):
        if OmegaConf.is_missing(sub, key):
            raise ConfigError(f"submission.{key} is not set: the {key}'s name (a folder name of the submission)")
        if not str(sub[key]).strip() or "/" in str(sub[key]):
            raise ConfigError(f"submission.{key}={sub[key]!r}: a folder name is needed")
    for key in ("min_duration_ms", "min_query_count", "performance_sample_count", "audit_conf", "compliance",
                "output_dir", "user_conf"):
        if cfg.loadgen.get(key) is not None:
            raise ConfigError(f"loadgen.{key}={cfg.loadgen[key]}: a submission runs at MLPerf's settings and sets "
                              f"LoadGen's folders and conf files itself; leave it unset")
    if sub.dry_run:
        return
    if cfg.dataset.limit is not None:
        raise ConfigError(f"dataset.limit={cfg.dataset.limit}: a submission's accuracy run covers all {WHOLE_SET:,} "
                          f"validation images (submission.dry_run=true makes the layout from fewer)")
    from preprocessing.dataset import load_dataset

    listed = len(load_dataset(cfg.dataset.root, cfg.dataset.labels, None, layout=cfg.dataset.layout))
    if listed != WHOLE_SET:
        raise ConfigError(f"dataset.root={cfg.dataset.root} lists {listed:,} images: a submission's accuracy run "
                          f"covers all {WHOLE_SET:,} validation images (submission.dry_run=true makes the same layout "
                          f"from any data, marked as not a submission)")


# The closed division's scenarios per system type (MLPerf Inference's rules for ResNet-50 v1.5, as
# the checker of submission.round=v6.1 holds them: since v5.1 the datacenter suite has no image
# classification, so a datacenter-only system is refused; a datacenter,edge one runs all four), and
# the families that have a closed benchmark in the current rounds
REQUIRED_SCENARIOS = {"edge": ("SingleStream", "MultiStream", "Offline"),
                      "datacenter,edge": ("SingleStream", "MultiStream", "Offline", "Server")}
CLOSED_FAMILIES = ("resnet50",)
MLPERF_LISTS = ("option_1", "option_2")


def required_scenarios(system_type: str) -> list[str]:
    return list(REQUIRED_SCENARIOS[",".join(sorted(t.strip() for t in system_type.split(",")))])


def closed_rules(cfg: DictConfig) -> None:
    """The closed division's rules, each refused before any run and named: MLPerf's model and its
    checkpoint (by md5; a dry run lets any through), MLPerf's preprocessing, no change of the weights
    of the harness's or a user's making, int8 calibrated on MLPerf's list only, every scenario of
    the system type, TEST01 and TEST04 in each."""
    sub, m = cfg.submission, cfg.model
    if m.arch == "mobilenet_v1":
        raise ConfigError("submission.division=closed: MobileNet has no closed benchmark in current MLPerf "
                          "Inference rounds (image classification's is ResNet-50 v1.5): submission.division=open")
    if m.arch not in CLOSED_FAMILIES:
        raise ConfigError(f"submission.division=closed: model={m.name} is not MLPerf's model; the closed division "
                          f"runs MLPerf's ResNet-50 v1.5 (model=resnet50) as published: submission.division=open")
    if m.get("transform") is not None:
        raise ConfigError(f"submission.division=closed: model.transform={m.transform} changes the model; the closed "
                          f"division allows no change of its weights beyond the declared transformations")
    if not sub.dry_run:
        from benchmark.runtimes.source import ModelSpec, is_mlperfs

        spec = ModelSpec.from_config(m)
        if not is_mlperfs(spec, Path(str(spec.checkpoint)).expanduser()):
            raise ConfigError(f"submission.division=closed: model.checkpoint={spec.checkpoint} is not MLPerf's "
                              f"published checkpoint (its URL, or a file of one of its md5s: "
                              f"{', '.join(spec.published_md5)}); the closed division runs it unchanged")
    preprocess = {**OmegaConf.to_container(cfg.preprocess, resolve=True)}
    departures = mlperf_departures(m.arch, preprocess)
    if departures:
        raise ConfigError(f"submission.division=closed: the preprocessing departs from MLPerf's "
                          f"({'; '.join(departures)}); the closed division runs MLPerf's (preprocess=mlperf)")
    if cfg.precision == "int8" and str(cfg.calibration.list) not in MLPERF_LISTS:
        raise ConfigError(f"submission.division=closed: calibration.list={cfg.calibration.list}: a quantized "
                          f"model is calibrated on MLPerf's calibration list ({' or '.join(MLPERF_LISTS)}) only")
    required = required_scenarios(str(sub.system_type))
    missing = [s for s in required if s not in sub.scenarios]
    if missing:
        raise ConfigError(f"submission.division=closed: a system of type {sub.system_type} submits "
                          f"{', '.join(required)}; submission.scenarios lacks {', '.join(missing)}")
    lacking = [t for t in TESTS if t not in sub.compliance]
    if lacking:
        raise ConfigError(f"submission.division=closed: every scenario needs {' and '.join(TESTS)}; "
                          f"submission.compliance lacks {', '.join(lacking)}")


def short_of_target(accuracy: Results) -> str | None:
    """Why an accuracy run does not meet MLPerf's target as the closed division needs it (None: it does)."""
    gate = accuracy.gate
    if gate is None:
        return "no MLPerf target recorded"
    if not gate.passed or gate.reservations:
        return "; ".join([f"{gate.accuracy}% against the target's {gate.target}%", *gate.reservations])
    return None


def input_digests(cfg: DictConfig) -> dict:
    """The sha256 of each file a run reads that the overrides name only by its path: the checkpoint (a
    local file), the transform's and the user module's source files. A file replaced under the same
    name is then a change of settings, not a resumed run of other bytes."""
    from benchmark.formats.checkpoint import file_digest
    from benchmark.nn.transform import load_callable

    out = {}
    ckpt = cfg.model.get("checkpoint")
    if ckpt and "://" not in str(ckpt) and Path(str(ckpt)).expanduser().is_file():
        out["model.checkpoint"] = file_digest(Path(str(ckpt)).expanduser())
    for key in ("transform", "module"):
        if not OmegaConf.is_missing(cfg.model, key) and cfg.model.get(key) is not None:
            out[f"model.{key}"] = load_callable(cfg.model[key], f"model.{key}").source_sha256
    return out


def changes(before: dict, now: dict) -> str:
    """What differs between two work folders' settings, named: 'model.checkpoint's sha256 (abc... now def...)'."""
    said = []
    for key in sorted(before.keys() | now.keys()):
        if key == "inputs":
            a, b = before.get(key) or {}, now[key]
            said += [f"{k}'s sha256 ({str(a.get(k))[:12]} then, {str(b.get(k))[:12]} now)"
                     for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
        elif before.get(key) != now.get(key):
            said.append(key)
    return ", ".join(said)


def child_overrides(overrides: list[str]) -> list[str]:
    """The command's overrides for a LoadGen run in another folder: the submission's own keys left out,
    the paths a run reads made absolute."""
    out = []
    for item in overrides:
        key, _, value = item.partition("=")
        if key.lstrip("+~").startswith("submission.") or key.lstrip("+~").startswith("hydra."):
            continue
        if key in PATH_KEYS and value and "://" not in value and value != "null" and not value.startswith("$"):
            value = str(Path(value).expanduser().absolute())
        out.append(f"{key}={value}")
    return out


def not_a_result(folder: Path, results: Results) -> str | None:
    """Why a finished run is not a result MLPerf's checker accepts (None: it is one): a performance run
    INVALID or with a LoadGen ERROR (the checker does not look at the validity: the harness must); an
    accuracy run whose detail log holds a LoadGen ERROR (the checker's accuracy check fails on it)."""
    lg = results.loadgen
    if not lg:  # the speed measurement: no LoadGen
        return None
    if lg.mode == "performance":
        if lg.validity == "VALID" and not lg.loadgen_errors:
            return None
        why = "; ".join(r for r in (lg.invalid_reason, lg.early_stopping_result, *(lg.loadgen_errors or [])) if r)
        return f"the performance run is {lg.validity} ({why or 'LoadGen gives no reason'})"
    from benchmark.loadgen.settings import read_detail_log

    errors = read_detail_log(folder / "mlperf_log_detail.txt")["errors"]
    return f"the accuracy run's detail log holds LoadGen ERRORs ({'; '.join(errors[:3])})" if errors else None


def read(path: Path) -> Results:
    """A run's results file, of whichever kind (evaluation/results.py: upgraded, refused if newer)."""
    return read_results(path, kinds=tuple(KINDS), command="benchmark.submission")


def finished(folder: Path, probe: bool = False) -> Results | None:
    """A run's results, if it ran to its end (LoadGen's results.json written, no INCOMPLETE mark) and
    is a result (not_a_result); a probe's whatever its validity (a short run, read for its rate or
    latency: measured again, a resumed command would plan, and run, its scenario anew)."""
    results = folder / "results.json"
    if folder.is_dir() and results.is_file() and not (folder / INCOMPLETE).exists():
        done = read(results)
        if probe or not_a_result(folder, done) is None:
            return done
    return None


def loadgen_run(overrides: list[str], folder: Path, *extra: str, command: str = "benchmark.loadgen",
                probe: bool = False) -> Results:
    """One run in a process of its own, started in a fresh empty folder; its results. A finished run
    (`probe`: whatever its validity) is not run again; an unfinished one is removed and run again."""
    done = finished(folder, probe)
    if done is not None:
        print(f"submission: {folder} finished before: not run again", file=sys.stderr)
        return done
    if folder.exists():
        why = "was not a result" if (folder / "results.json").is_file() and not (folder / INCOMPLETE).exists() \
            else "did not finish"
        print(f"submission: {folder} {why}: removed, run again", file=sys.stderr)
        shutil.rmtree(folder)
    cwd = folder.parent / f".{folder.name}-cwd"
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    target = ("loadgen.output_dir" if command == "benchmark.loadgen" else "results_file")
    where = folder if command == "benchmark.loadgen" else folder / "results.json"
    if command != "benchmark.loadgen":
        folder.mkdir(parents=True)
    args = [sys.executable, "-m", command, *overrides, *extra, f"{target}={where}", "progress=false"]
    output = folder.with_name(folder.name + ".log")  # beside it: LoadGen's folder starts empty
    print(f"submission: running {' '.join(args[2:])} (output: {output})", file=sys.stderr)
    with open(output, "w") as log:
        proc = subprocess.run(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    shutil.rmtree(cwd, ignore_errors=True)
    if proc.returncode != 0:
        tail = "\n".join(output.read_text(errors="replace").strip().splitlines()[-5:])
        raise SubmissionError(f"{folder}: the run failed (exit status {proc.returncode}; {output}):\n{tail}")
    return read(folder / "results.json")


def measured_qps(overrides: list[str], work: Path, images: int) -> float:
    """The model's images/s over the cached crops, as the evaluation loop runs it (Offline's target)."""
    plain = [o for o in overrides if not o.lstrip("+~").startswith(("loadgen.", "dataset.limit="))]
    r = loadgen_run(plain, work / "speed", f"dataset.limit={min(images, 2048)}", command="benchmark")
    return float(r.timing["eval_images_per_s"])


PROBE_MS = 30_000  # the short Offline run Offline's plan is made from


def probed_qps(base: list[str], folder: Path, guess: float) -> float:
    """The samples/s LoadGen itself achieves in a short Offline performance run (PROBE_MS, planned at
    `guess`): LoadGen's own overhead and this machine's pace now, which the evaluation loop's rate
    over cached crops overstates (measured on 2 cores: 3,075 images/s in the loop, 2,240 in LoadGen's
    Offline run). Not packaged; kept in `folder` for a resumed command."""
    name = folder.with_name(folder.name + ".user.conf")
    name.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(name, "# benchmark.submission's Offline probe: a short run, not a submission's settings\n"
                                f"*.Offline.target_qps = {guess:.1f}\n*.Offline.min_duration = {PROBE_MS}\n")
    probe = loadgen_run(base, folder, "loadgen.mode=performance", f"loadgen.user_conf={name}", probe=True)
    return float(probe.loadgen.value)


SERVER_PROBE_MS = 10_000  # the short Server run at a low rate the Server's plan is made from
SERVER_LATE = 1e-3  # the share of Server queries the plan lets queue past the bound (early stopping allows few)


def server_plan(runs: list[str], folder: Path, bound_ns: float, probe_ms: int, guess: float) -> tuple[float, str]:
    """The Server's target_qps and why, from a short Server run of LoadGen at a low rate (`probe_ms`,
    a twentieth of `guess` images/s): one query's 99th-percentile latency `s` as a Server query meets
    it, arriving at an idle machine (on 2 cores, 6 ms where back-to-back SingleStream queries took
    3.4). A query that finds N others waits for about the rest of the one running (half of it) and
    the others, then its own: it is late where (N + 1/2) s passes MLPerf's bound. The plan keeps the share of
    queries finding that many (rho ** N, queries arriving at random as LoadGen sends them) at
    SERVER_LATE. A machine where a query that finds one other running is already late is refused: no
    Server run could keep its queries in time at a useful rate. A safe start, not the most a machine
    sustains (queries that queue are answered together, in a batch padded to the next compiled size, which
    this does not count): give submission.server_target_qps to run at a rate of one's own. Not
    packaged; kept in `folder` for a resumed command."""
    name = folder.with_name(folder.name + ".user.conf")
    name.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(name, "# benchmark.submission's Server probe: a short run at a low rate, not a "
                                "submission's settings\n"
                                f"*.Server.target_qps = {guess / 20:.1f}\n"
                                f"*.Server.min_duration = {probe_ms}\n*.Server.min_query_count = 100\n")
    probe = loadgen_run([*runs, "loadgen.scenario=Server"], folder, "loadgen.mode=performance",
                        f"loadgen.user_conf={name}", probe=True)
    p99 = float((probe.loadgen.latency_ns or {}).get("99.00_percentile") or 0)
    if not p99:
        raise SubmissionError(f"{folder}: the Server's probe reported no 99th-percentile latency")
    late = math.floor(bound_ns / p99 - 0.5) + 1  # the fewest queries found waiting that make one late
    if late < 2:
        raise SubmissionError(f"{folder}: one Server query takes {p99 / 1e6:.2f} ms here (99th percentile, at a low "
                              f"rate): one that finds another running is late for MLPerf's Server bound of "
                              f"{bound_ns / 1e6:g} ms, so no Server run can be VALID at a useful rate on this system "
                              f"as it runs the model (a faster precision or device; or submission.server_target_qps)")
    rho = SERVER_LATE ** (1 / late)
    return rho * 1e9 / p99, (f"{rho:.2f} of one query at a time at its 99th-percentile latency, {p99 / 1e6:.2f} ms "
                             f"in a {probe_ms / 1000:g} s Server run at a low rate (probe/): a query finding {late} "
                             f"others is late for MLPerf's {bound_ns / 1e6:g} ms bound, and about "
                             f"{SERVER_LATE:g} of them do")


def achieved(folder: Path) -> float:
    """The images/s a performance run achieved that ended before its minimum duration (LoadGen had
    planned too few samples or queries: the speed measured before was lower than the run's): Offline's
    samples/s, or one image per SingleStream latency; 0 for any other run."""
    results = folder / "results.json"
    if not results.is_file():
        return 0.0
    lg = read(results).loadgen
    if lg is None or lg.validity == "VALID" or lg.min_duration_met is not False or not lg.value:
        return 0.0
    return {"Offline": float(lg.value), "SingleStream": 1e9 / float(lg.value)}.get(lg.scenario, 0.0)


def settings_of(conf: str, scenario: str) -> set[str]:
    """The lines of a user.conf that set something for `scenario` (`model.scenario.key = value`, or
    with `*`), spaces removed: what a run of that scenario reads."""
    lines = {"".join(line.split()) for line in conf.splitlines() if line.strip() and not line.startswith("#")}
    return {line for line in lines if line.split(".")[1] in (scenario, "*")}


def user_conf(cfg: DictConfig, qps: float, why: str = "", scenario: str = "Offline") -> str:
    """The user.conf of the performance runs: what the harness sets beside MLPerf's mlperf.conf. A
    Server's `qps` is its own planned rate (server_plan), the others' the machine's images/s."""
    name, sub = family(judged_as(cfg.model.arch, cfg.model.get("ports"))).loadgen_name, cfg.submission
    margin = float(sub.margin)
    # LoadGen plans an Offline run's samples from its target_qps (1.1 x the minimum duration at that
    # rate: a rate LoadGen achieves gives 1.1 x 600 s; a plan too short ends early, INVALID), and
    # generates Single/MultiStream queries for twice the minimum duration at their target latency,
    # ending when the minimum is met (too few, from too long a latency, run out: INVALID)
    lines = [f"# written by benchmark.submission from {why or 'the images/s measured on this machine'}, "
             f"times the margin ({margin}):",
             "# Offline's target, the Single/MultiStream latencies it implies (8 samples a MultiStream query)",
             f"{name}.Offline.target_qps = {qps * margin:.1f}",
             f"{name}.SingleStream.target_latency = {1000 / (qps * margin):.4f}",
             f"{name}.MultiStream.target_latency = {8 * 1000 / (qps * margin):.4f}"]
    if scenario == "Server":  # a rate of its own, no margin: a faster plan queues queries past the bound
        lines = [f"# written by benchmark.submission: the Server's target from {why}",
                 f"{name}.Server.target_qps = {qps:.1f}"]
    if sub.dry_run:
        lines += ["# a dry run: short performance runs, NOT a submission's settings",
                  f"*.*.min_duration = {int(sub.dry_run_duration_ms)}",
                  "*.*.min_query_count = 100",  # SingleStream's early stopping needs 64 queries at least,
                  "*.MultiStream.min_query_count = 662",  # MultiStream's (its 99th percentile) 662
                  # the Server's 459 with every query in time; 1,500 let 6 be late (its TEST01 run logs answers)
                  f"*.Server.min_query_count = {DRY_RUN_SERVER_QUERIES}"]
    return "\n".join(lines) + "\n"


def measurements(cfg: DictConfig, accuracy: Results) -> dict:
    """measurements.json: the checker's five fields, from what ran."""
    facts = accuracy.facts
    precision = facts.precision
    done = ["batch norms folded into the convolutions (as TensorFlow's optimizer folds them)"] \
        if facts.fold_bn else []
    if facts.transform:
        t = facts.transform
        done.append(f"transformed by {t['target']} (sha256 {t['source_sha256']})")
    if accuracy.calibration:
        c = accuracy.calibration
        done.append(f"post-training int8 quantization calibrated on {c.list} ({c.images} images)")
    elif precision == "tf32":
        done.append("matrix products and convolutions on TF32 tensor cores, weights stored in float32")
    elif precision != "fp32":
        dtype = {"bf16": "bfloat16", "fp16": "float16"}[precision]
        frozen = facts.cpu_fusion == "graph" and facts.device == "cpu"
        done.append(f"weights rounded to {dtype}: " + (
            f"frozen as {dtype} constants in the compiled CPU model (traced under autocast)" if frozen
            else f"cast to {dtype} at each layer by PyTorch autocast from float32 copies"))
    module = (facts.conversion or {}).get("module")
    return {
        "input_data_types": "fp32",  # MLPerf's normalised float32 image
        "retraining": "No",
        "starting_weights_filename": Path(facts.checkpoint["path"]).name,
        # what the arithmetic reads: bf16 and fp16 weights are rounded to the type they are computed in
        "weight_data_types": {"int8": "int8", "bf16": "bf16", "fp16": "fp16"}.get(precision, "fp32"),
        "weight_transformations": "; ".join(done) or "none: the graph's weights as they are",
        "harness": {"precision": precision, "module": module, "checkpoint_sha256": facts.checkpoint["sha256"],
                    # where the open division's preprocessing departs from MLPerf's ([]: MLPerf's pipeline)
                    "preprocessing": {**facts.preprocess, "departs_from_mlperf": pipeline_departures(accuracy)},
                    "transform": facts.transform,
                    "calibration_list": accuracy.calibration.list if accuracy.calibration else None},
    }


def pipeline_departures(accuracy: Results) -> list[str]:
    """How the run's preprocessing departs from MLPerf's pipeline for the model it is judged as."""
    return mlperf_departures(accuracy.facts.judged, accuracy.facts.preprocess)


def readme(cfg: DictConfig, scenario: str, command: str, accuracy: Results, performance: Results) -> str:
    mark = "**DRY RUN: NOT A SUBMISSION.** Short runs on a dataset of any size, for checking the layout.\n\n" \
        if cfg.submission.dry_run else ""
    lg, f = performance.loadgen, accuracy.facts
    pipeline = ", ".join(pipeline_departures(accuracy)) or "MLPerf's pipeline"
    return (f"# {cfg.model.name}, {scenario}\n\n{mark}Made by the ImageNet MLPerf harness "
            f"(`python -m benchmark.submission`):\n\n```\n{command}\n```\n\n"
            f"- accuracy: `{accuracy.accuracy_line}` ({f.dataset['listed']:,} images listed)\n"
            f"- performance: {lg.metric} = {lg.value} {lg.unit} ({lg.validity})\n"
            f"- model: {f.model} ({f.arch}), checkpoint `{Path(f.checkpoint['path']).name}` "
            f"(sha256 {f.checkpoint['sha256']}), backend {f.backend} on {f.device}, precision {f.precision}\n"
            f"- preprocessing: {pipeline} ({f.preprocess['name']}: {f.preprocess['interpolation']})\n")


def make(cfg: DictConfig, overrides: list[str]) -> Path:
    """Every run the submission needs (those finished before are kept), then its folder; returns the
    scenario folders' parent."""
    check(cfg)
    sub = cfg.submission
    judged = judged_as(cfg.model.arch, cfg.model.get("ports"))
    benchmark = sub.benchmark or family(judged).submission_benchmark
    if benchmark is None:
        raise ConfigError(f"submission.benchmark is not set: the folder of your model in the open division "
                          f"(model={cfg.model.name} is none of MLPerf's; e.g. submission.benchmark=my-classifier, "
                          f"mapped to MLPerf's resnet task in model_mapping.json)")
    out = Path(sub.out).expanduser().absolute()
    work = Path(sub.work).expanduser().absolute() if sub.work else out.with_name(out.name + "-runs")
    # The system description first: a missing field is refused before hours of runs.
    from benchmark.evaluation.report import library_versions

    versions = {**library_versions(), "mlcommons-loadgen": _loadgen_version()}
    caps = runtimes.supports(cfg.backend)
    device = str(cfg.device) if str(cfg.device).startswith("cuda") and caps.cuda else "cpu"

    def system_description(device: str, version: str | None):
        facts = machine(device, versions, runtimes.framework(cfg.backend, version), caps.library_key)
        return description(OmegaConf.to_container(sub.system_desc, resolve=True), facts, sub.division,
                           sub.submitter, sub.status, sub.system_type, sub.system)

    version = versions.get(caps.library_key or "")
    system, missing = system_description(device, version)
    if missing:
        raise ConfigError(f"the system description needs {', '.join(missing)}: the machine cannot tell them; give "
                          f"each as submission.system_desc.<field>=... (e.g. submission.system_desc.{missing[0]}=...)")

    runs = child_overrides(overrides)
    settings = {"overrides": runs, "dry_run": bool(sub.dry_run), "scenarios": list(sub.scenarios),
                "compliance": list(sub.compliance), "inputs": input_digests(cfg)}
    saved = work / "settings.json"
    if saved.is_file() and (before := json.loads(saved.read_text())) != settings:
        raise ConfigError(f"{work} holds runs made with other settings ({saved}: {changes(before, settings)}): give "
                          f"another submission.work, or remove it to start again")
    work.mkdir(parents=True, exist_ok=True)
    write_text_atomically(saved, json.dumps(settings, indent=1))
    command = "python -m benchmark.submission " + " ".join(overrides)

    root = out / sub.division / sub.submitter
    results = root / "results" / sub.system / benchmark
    packaged = []
    for scenario in sub.scenarios:
        base = [*runs, f"loadgen.scenario={scenario}"]
        accuracy = loadgen_run(base, work / scenario / "accuracy", "loadgen.mode=accuracy")
        _valid(accuracy, work / scenario / "accuracy")
        if not sub.dry_run and accuracy.scores.total != WHOLE_SET:
            raise SubmissionError(f"{work / scenario / 'accuracy'}: the accuracy run covered "
                                  f"{accuracy.scores.total:,} images (skipped: {len(accuracy.facts.skipped)}), "
                                  f"not all {WHOLE_SET:,}")
        missed = short_of_target(accuracy) if sub.division == "closed" and not sub.dry_run else None
        if missed:
            raise SubmissionError(f"{work / scenario / 'accuracy'}: the closed division needs MLPerf's target met "
                                  f"without reservations: {missed}")
        conf = work / scenario / "user.conf"
        # a dry run's target: eight times the accuracy run's warm batch (one batch is a rough measure, and
        # a run that ends before its second is INVALID: at four times, a TEST01 run of 0.1 s in CI once ran
        # faster than planned and ended early); a submission's: the evaluation loop timed over
        # 2,048 images (its Offline run must last the 600 s it plans)
        if scenario == "Server" and sub.server_target_qps:
            qps, why = float(sub.server_target_qps), "submission.server_target_qps"
        elif scenario == "Server":  # its rate is bound by one image's latency, not by images/s
            from benchmark.loadgen.settings import read_detail_log

            bound = read_detail_log(work / scenario / "accuracy" / "mlperf_log_detail.txt")["values"][
                "effective_target_latency_ns"]
            qps, why = server_plan(runs, work / scenario / "probe", float(bound), int(
                sub.dry_run_duration_ms) if sub.dry_run else SERVER_PROBE_MS, accuracy.loadgen.warm_up_images_per_s)
        elif sub.dry_run:
            qps, why = 8 * accuracy.loadgen.warm_up_images_per_s, "eight times the accuracy run's warm batch"
        else:
            qps, why = measured_qps(runs, work, accuracy.scores.total), "the evaluation loop's images/s"
            if scenario == "Offline":  # the one scenario whose length its plan sets
                qps = probed_qps(base, work / scenario / "probe", qps)
                why = f"the samples/s LoadGen achieved in a {PROBE_MS // 1000} s Offline run (probe/)"
        # the rate the plan is made from only rises: an earlier run's achieved rate is kept (not the
        # Server's: its rate is its plan's, never a measure of the machine)
        rate = work / scenario / "images_per_s.json"
        before = json.loads(rate.read_text())["images_per_s"] if rate.is_file() and scenario != "Server" else 0.0
        if max(before, achieved(work / scenario / "performance")) > qps:
            qps, why = max(before, achieved(work / scenario / "performance")), "an earlier run's achieved rate"
        performance, perf_args = planned_run(cfg, base, work / scenario, scenario, qps, why)
        _valid(performance, work / scenario / "performance")
        folder = results / scenario
        shutil.rmtree(folder, ignore_errors=True)
        package.accuracy_folder(work / scenario / "accuracy", folder / "accuracy", accuracy.accuracy_line)
        package.performance_folder(work / scenario / "performance", folder / "performance" / "run_1")
        for test in sub.compliance:
            (_test01 if test == "TEST01" else _test04)(cfg, base, perf_args, work / scenario, folder / test, performance)
        shutil.copyfile(conf, folder / "user.conf")
        package.write_json(folder / "measurements.json", measurements(cfg, accuracy))
        write_text_atomically(folder / "README.md", readme(cfg, scenario, command, accuracy, performance))
        packaged.append(folder)
    # what ran the model, as the accuracy run recorded it (backend=tf runs on the CPU, whatever device says)
    system, _ = system_description(accuracy.facts.device, accuracy.facts.runtime_version)
    package.write_json(root / "systems" / f"{sub.system}.json", system)
    (root / "src").mkdir(parents=True, exist_ok=True)
    write_text_atomically(root / "src" / "README.md", _source(command, accuracy))
    if accuracy.calibration:  # a quantized model's calibration, as the closed division asks it documented
        write_text_atomically(root / "documentation" / "calibration.md", _calibration(accuracy))
    if benchmark != "resnet":  # the checker's name of the task (it maps mobilenet itself; said for clarity)
        package.write_json(root / "model_mapping.json", {benchmark: "resnet"})
    mark = out / DRY_RUN_MARK
    if sub.dry_run:
        write_text_atomically(mark, "A dry run of python -m benchmark.submission: short runs on any data, in the "
                                    "layout of a submission. It is not one, and MLPerf's checker rejects it.\n")
    elif mark.exists():
        mark.unlink()
    print(f"submission: {len(packaged)} scenario(s) in {results}" + (" (DRY RUN: not a submission)" if sub.dry_run
                                                                     else ""))
    print(f"check it: cd <mlcommons/inference>/tools/submission && python3 -m submission_checker.main "
          f"--input {out} --version {sub.round}", file=sys.stderr)
    return results


def planned_run(cfg: DictConfig, base: list[str], work: Path, scenario: str, qps: float,
                why: str) -> tuple[Results, tuple[str, ...]]:
    """The scenario's performance run planned at `qps` (`why`: where the rate comes from, written into
    its user.conf and said): a run that ends early (it ran faster than planned) is planned again once
    at the rate it achieved. Returns its results (a result or not: the caller judges) and the run's
    LoadGen arguments (its compliance runs take the same)."""
    sub, conf = cfg.submission, work / "user.conf"
    for attempt in (1, 2):
        write_text_atomically(work / "images_per_s.json", json.dumps({"images_per_s": qps}))
        text = user_conf(cfg, qps, why, scenario)
        if conf.is_file() and settings_of(conf.read_text(), scenario) != settings_of(text, scenario):
            # runs made with other LoadGen settings for this scenario are not kept
            print(f"submission: {conf} changes: its scenario's performance runs are run again", file=sys.stderr)
            for stale in ("performance", *sub.compliance):
                shutil.rmtree(work / stale, ignore_errors=True)
        write_text_atomically(conf, text)
        margin = 1.0 if scenario == "Server" else float(sub.margin)
        print(f"submission: {scenario} planned at {qps * margin:.1f} images/s: {why}"
              + ("" if scenario == "Server" else f", times submission.margin={sub.margin}"), file=sys.stderr)
        perf_args = ("loadgen.mode=performance", f"loadgen.user_conf={conf}")
        performance = loadgen_run(base, work / "performance", *perf_args)
        faster = achieved(work / "performance")
        if attempt == 1 and faster > qps and not_a_result(work / "performance", performance):
            qps, why = faster, "the rate of the run before it, which ended early"
            continue
        return performance, perf_args
    raise AssertionError("unreachable")


def _valid(results: Results, folder: Path) -> None:
    """A run that is not a result stops the submission: never packaged, run again next time."""
    why = not_a_result(folder, results)
    if why is not None:
        hint = " (an Offline run that ended early: at the samples/s it achieved, times submission.margin)" \
            if results.loadgen.scenario == "Offline" and results.loadgen.min_duration_met is False else ""
        raise SubmissionError(f"{folder}: {why}: not a result, not packaged; the command runs it again next "
                              f"time{hint}")


def _test01(cfg: DictConfig, base: list[str], perf_args: tuple, work: Path, out: Path, performance: Results) -> None:
    """TEST01: a performance run with an audit config that logs a sample of its answers, the answers
    compared with the scenario's accuracy run, its performance with the scenario's performance run."""
    from benchmark.evaluation.accuracy_log import read_log, same_answers
    from benchmark.loadgen.compliance import AUDIT

    lg = cfg.loadgen
    audit = work / "TEST01.audit.config"
    write_text_atomically(audit, AUDIT.format(seed=int(lg.test01.seed), target=int(lg.test01.sampling_target)))
    audited = loadgen_run(base, work / "TEST01", *perf_args, f"loadgen.audit_conf={audit}")
    _valid(audited, work / "TEST01")
    answers = same_answers(read_log(work / "accuracy" / "mlperf_log_accuracy.json"),
                           read_log(work / "TEST01" / "mlperf_log_accuracy.json"))
    passed, text = package.verify_performance(performance.loadgen, audited.loadgen)
    package.performance_folder(work / "TEST01", out / "performance" / "run_1")
    write_text_atomically(out / "verify_accuracy.txt", package.verify_accuracy(answers))
    write_text_atomically(out / "verify_performance.txt", text)
    # a dry run's performance runs last a fraction of a second: their speeds are noise, not a verdict
    if not answers["passed"] or not (passed or cfg.submission.dry_run):
        raise SubmissionError(f"{work / 'TEST01'}: TEST01 fails ({out / 'verify_accuracy.txt'}, "
                              f"{out / 'verify_performance.txt'}): not packaged as a pass")


def _test04(cfg: DictConfig, base: list[str], perf_args: tuple, work: Path, out: Path, performance: Results) -> None:
    """TEST04: a performance run issuing one sample again and again (MLPerf's audit config), its score
    against the scenario's performance run by MLPerf's rule (loadgen/compliance.py): a system that
    caches answers runs it far faster and fails."""
    from benchmark.loadgen.compliance import AUDIT_TEST04, verify_test04

    audit = work / "TEST04.audit.config"
    write_text_atomically(audit, AUDIT_TEST04)
    audited = loadgen_run(base, work / "TEST04", *perf_args, f"loadgen.audit_conf={audit}")
    _valid(audited, work / "TEST04")
    passed, text = verify_test04((work / "performance" / "mlperf_log_summary.txt").read_text(),
                                 (work / "TEST04" / "mlperf_log_summary.txt").read_text())
    package.performance_folder(work / "TEST04", out / "performance" / "run_1")
    write_text_atomically(out / "verify_performance.txt", text)
    # a dry run's performance runs last a fraction of a second: their speeds are noise, not a verdict
    if not (passed or cfg.submission.dry_run):
        raise SubmissionError(f"{work / 'TEST04'}: TEST04 fails ({out / 'verify_performance.txt'}): the run that "
                              f"repeats one sample was faster than the performance run by more than MLPerf allows")


def _calibration(accuracy: Results) -> str:
    c = accuracy.calibration
    listed = f"MLPerf's calibration list {c.mlperf_list}" if c.mlperf_list else f"the list {c.list}"
    return ("# Calibration\n\nPost-training int8 quantization (PyTorch's FX flow, the harness's recipe: "
            "docs/precision.md), its activation ranges observed on "
            f"{c.images} images of {listed} (sha256 {c.sha256}), cropped by the run's own preprocessing; "
            "no retraining.\n")


def _loadgen_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlcommons-loadgen")
    except PackageNotFoundError:
        return ""


def _source(command: str, accuracy: Results) -> str:
    git = accuracy.git
    return ("# Source\n\nThe ImageNet MLPerf harness (this repository's `benchmark` package) ran every result here.\n\n"
            f"- commit: {git.get('commit') or 'not a git checkout (an installed package)'}"
            f"{' (with uncommitted changes)' if git.get('dirty') else ''}\n"
            f"- versions: {', '.join(f'{k} {v}' for k, v in accuracy.versions.items() if v)}\n\n"
            f"```\n{command}\n```\n")
