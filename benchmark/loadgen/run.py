"""One LoadGen run: the harness's setup (config, checkpoint, model, crop cache), LoadGen driving the
SUT, LoadGen's logs, and the results JSON (the accuracy log scored, or the performance outcome)."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from benchmark.evaluation import accuracy_log, report
from benchmark.evaluation.results import stamped
from benchmark.families import family
from benchmark.loadgen import settings as lgs
from benchmark.loadgen.sut import SampleLibrary, SystemUnderTest
from benchmark.run import (Setup, print_outcome, reference_comparison, results_dict, results_path, run_facts,
                           setup)
from benchmark.spec import RunSpec
from preprocessing.errors import ConfigError

INCOMPLETE = "INCOMPLETE"  # in a log folder whose run did not finish; removed when it does


def import_loadgen():
    try:
        import mlperf_loadgen
    except ImportError as e:
        raise ConfigError("MLPerf's LoadGen is not installed: python -m pip install -e \".[loadgen]\" "
                          "(PyPI: mlcommons-loadgen)") from e
    return mlperf_loadgen


def log_folder(output_dir: str | None, model: str, p: lgs.LoadGenPlan) -> Path:
    """A new, empty folder for this run's logs (loadgen.output_dir=, else one named after the `model`
    and the plan under results/loadgen/): another run's logs are never overwritten."""
    if output_dir:
        folder = Path(output_dir).expanduser()
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ConfigError(f"loadgen.output_dir={folder} is not empty: it may hold another run's logs")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        folder = Path("results/loadgen") / f"{model}-{p.scenario}-{p.mode}-{stamp}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def val_map_text(s: Setup) -> str:
    """The samples in LoadGen's order (qsl_idx = line), for MLPerf's accuracy-imagenet.py. With the
    whole validation set in MLPerf's order this is MLPerf's val_map.txt itself. MLPerf's tools split
    each line on white space, so a name holding any is refused before the run, not after it."""
    spaced = [name for name in s.names if len(name.split()) != 1]
    if spaced:
        raise ConfigError(f"{len(spaced)} image name(s) hold white space, which MLPerf's val_map.txt format "
                          f"(and its accuracy-imagenet.py) cannot carry: {spaced[:3]}; rename them for a LoadGen run")
    return "".join(f"{name} {label}\n" for name, label in zip(s.names, s.labels.tolist()))


def query_batch_sizes(scenario: str, batch_size: int, settings) -> set[int]:
    """The batch sizes the SUT sends besides the run's and 1: a MultiStream query of k samples is
    answered in batches of the batch size and a last one of the rest; Server queries that queue while
    a batch runs are answered together, any number up to the batch size: compiled for the powers of
    two below it, a batch of another number padded to the next (at most twice its rows; a compiled
    form per size would be one compile per number before the run). The runtime compiles for these
    instead of padding them to the batch size, so their latencies are (nearly) their own compute (a
    Server's two queued images padded to 8 took 28 ms where one took 4: its 90th percentile, on 2
    cores, and LoadGen's early stopping counts each late query)."""
    if scenario == "Server":
        return {1 << i for i in range(1, max(batch_size - 1, 1).bit_length())} - {batch_size}
    if scenario != "MultiStream":
        return set()
    k = int(settings.multi_stream_samples_per_query)
    return {min(batch_size, k)} | ({k % batch_size} if k > batch_size and k % batch_size else set())


def warm_up(library: SampleLibrary, runtime, batch_size: int, sizes: set[int] = frozenset()
            ) -> tuple[np.ndarray, float]:
    """As MLPerf's reference app does: a few predictions before LoadGen starts the clock, at batch 1,
    the batch size and `sizes` (the first call of a shape creates its kernels). Returns the last
    logits of batch size and the samples/s of the last batch-size pass (a warm one)."""
    n = min(batch_size, len(library))
    library.load(list(range(n)))
    for size in (n, 1, *sorted(k for k in sizes if k <= n), n, 1):
        clock = time.perf_counter()
        out = runtime(library.batch(np.arange(size)))
        if size == n:
            logits, rate = out, n / max(time.perf_counter() - clock, 1e-9)
    library.unload([])
    return logits, rate


def padding_line(padding: dict | None) -> str | None:
    """The padded compute of a LoadGen run, said where any: its latencies include those rows."""
    if not padding or not padding["padding_rows"]:
        return None
    return (f"padding: {padding['padding_rows']} of the {padding['rows_computed']} rows computed were zero rows "
            f"(batches of other sizes run at the next compiled size, of "
            f"{padding.get('compiled_sizes') or [padding['padded_to']]}, cpu_fusion=graph / CUDA graphs): the "
            f"latencies include their compute")


def server_rate(settings, p: lgs.LoadGenPlan, measured: float, samples: int) -> str:
    """What a Server run's query rate means for its duration, said before it starts. In accuracy mode
    (LoadGen issues every sample on Server's schedule; timing is not judged) a rate left to mlperf.conf
    (1 query/s: 50,000 images would take 14 hours) becomes what the warm-up measured, said so."""
    chosen = "target_qps" in p.overrides or p.user_conf is not None or p.mlperf_conf is not None
    if p.mode == "accuracy" and not chosen:
        settings.server_target_qps = max(1.0, round(0.8 * measured, 1))  # a rate the system sustains
        how = (f"loadgen.target_qps unset: issuing at {settings.server_target_qps:g} queries/s, 80% of the "
               f"{measured:.0f} samples/s measured in the warm-up (mlperf.conf's default is 1/s)")
    else:
        how = f"issuing at {settings.server_target_qps:g} queries/s (from loadgen.target_qps or the conf files)"
    return f"Server: {how}; {samples} samples take about {samples / settings.server_target_qps:,.0f} s"


def failure_handler(folder: Path):
    """A failed backend or sample load: LoadGen has no way to stop a test early and would wait for
    answers forever, so the error is reported, the log folder marked incomplete, and the process ends."""
    def on_failure(error: BaseException) -> None:
        text = "".join(traceback.format_exception(error))
        (folder / INCOMPLETE).write_text(f"the system under test failed; LoadGen's logs are partial\n\n{text}")
        sys.stderr.write(f"{text}error: the system under test failed during the LoadGen run: {error!r}; "
                         f"the partial logs in {folder} are marked {INCOMPLETE}\n")
        sys.stderr.flush()
        os._exit(1)
    return on_failure


def run(cfg: DictConfig) -> dict:
    from benchmark.evaluation.scoring import class_offset

    started = time.time()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("python -m benchmark.loadgen runs in one process (LoadGen drives one system under "
                          "test); launch it without torchrun")
    p = lgs.plan(cfg)  # every loadgen.* setting checked before anything is loaded
    spec = RunSpec.from_config(cfg)  # the config read here, once: every stage below takes its parts
    output_dir = cfg.loadgen.output_dir
    lgm = import_loadgen()
    s = setup(spec)
    if s.exact is not None:  # precision=: LoadGen runs the faster model; compare with fp32 by python -m benchmark
        s.exact.close()
    settings, sample_count = lgs.make_test_settings(lgm, p, family(s.judged).loadgen_name, len(s.readable))
    val_map = val_map_text(s)
    folder = log_folder(output_dir, spec.model.name, p)
    (folder / INCOMPLETE).write_text("the run has not finished (or was killed): LoadGen's logs are partial\n")
    labels_file = folder / "val_map.txt"
    labels_file.write_text(val_map)

    library = SampleLibrary(s.cache.images, s.readable, s.runtime)
    sizes = query_batch_sizes(p.scenario, s.batch_size, settings)
    s.runtime.expect_batch_sizes(sizes)
    logits, measured = warm_up(library, s.runtime, s.batch_size, sizes)
    s.runtime.padding(reset=True)  # the run's own padded rows, not the warm-up's
    offset = class_offset(logits)  # 1001 outputs: background first
    sut = SystemUnderTest(lgm, library, s.runtime, s.batch_size, offset, keep_logits=p.mode == "accuracy",
                          on_failure=failure_handler(folder), inline=p.scenario in ("SingleStream", "MultiStream"))
    qsl = lgm.ConstructQSL(len(library), sample_count, sut.load, sut.unload)
    handle = lgm.ConstructSUT(sut.issue, sut.flush)
    log_settings = lgm.LogSettings()
    log_settings.log_output.outdir = str(folder.resolve())
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False
    print(f"LoadGen {p.scenario} {p.mode}: {len(library)} samples, {sample_count} in memory, "
          f"batch size {s.batch_size}, logs in {folder}", file=sys.stderr)
    if p.scenario == "Server":
        print(server_rate(settings, p, measured, len(library)), file=sys.stderr)
    # LoadGen holds the main thread in C++ until the test ends, where Python's Ctrl-C handler never
    # runs: the default action ends the process at once (the folder stays marked incomplete).
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        lgm.StartTestWithLogSettings(handle, qsl, settings, log_settings,
                                     str(p.audit_conf) if p.audit_conf else "")
    finally:
        signal.signal(signal.SIGINT, previous)
        sut.stop()
        lgm.DestroySUT(handle)
        lgm.DestroyQSL(qsl)
        s.runtime.close()

    padding = s.runtime.padding()
    facts = {"scenario": p.scenario, "mode": p.mode, "log_dir": str(folder), "val_map": str(labels_file),
             "batch_sizes": sorted({s.batch_size, 1, *sizes}), "padding": padding,
             "performance_sample_count": sample_count, "settings": p.to_dict(),
             "warm_up_images_per_s": round(measured, 2),  # one warm batch before the run
             "loadgen_version": lgs.read_detail_log(folder / "mlperf_log_detail.txt")["values"].get("loadgen_version")}
    if p.mode == "accuracy":
        results = accuracy_results(s, sut, folder, labels_file, facts, started)
    else:
        results = performance_results(s, folder, facts, started)
    (folder / INCOMPLETE).unlink()
    return results


def accuracy_results(s: Setup, sut: SystemUnderTest, folder: Path, labels_file: Path, facts: dict,
                     started: float) -> dict:
    """The accuracy log scored by MLPerf's rules, checked against what the SUT answered, and MLPerf's
    line; the reference backend, if asked for, on the same crops."""
    from benchmark.evaluation.scoring import score

    if (sut.answered == 0).any() or sut.logits is None:
        raise RuntimeError(f"LoadGen's accuracy run left {int((sut.answered == 0).sum())} of "
                           f"{len(sut.answered)} samples unanswered")
    logged = accuracy_log.score_file(folder / "mlperf_log_accuracy.json", labels_file)
    result = score(sut.logits, s.labels)
    answers = np.array([logged.answers.get(k, np.nan) for k in range(len(s.labels))])
    if logged.total != result.total or logged.good != result.good or not np.array_equal(answers, result.predictions):
        raise RuntimeError(f"LoadGen's accuracy log ({logged.mlperf_line()}) does not hold what the system "
                           f"under test answered ({result.mlperf_line()}) in {folder}")
    reference = reference_comparison(s, result, sut.logits)
    results = stamped({**results_dict(s, result, reference, time.time() - started),
                       "loadgen": {**facts, "accuracy_log": str(folder / "mlperf_log_accuracy.json"),
                                   "log_accuracy_line": logged.mlperf_line(),
                                   "answered_again": logged.duplicates}},  # LoadGen's repeats, counted once
                      "loadgen-accuracy")
    path = report.write_results(results, results_path(s.spec, folder / "results.json"))
    print_outcome(result, s, reference, path, real_score=results["real"])
    return results


def performance_results(s: Setup, folder: Path, facts: dict, started: float) -> dict:
    detail = lgs.read_detail_log(folder / "mlperf_log_detail.txt")
    outcome = lgs.outcome(detail, facts["scenario"])
    results = stamped({**report.facts_dict(run_facts(s)), "loadgen": {**facts, **outcome,
                                                                 "summary": str(folder / "mlperf_log_summary.txt")},
                       "elapsed_s": round(time.time() - started, 3)}, "loadgen-performance")
    path = report.write_results(results, results_path(s.spec, folder / "results.json"))
    print(f"results: {path}", file=sys.stderr)
    if line := padding_line(facts["padding"]):
        print(line, file=sys.stderr)
    for line in outcome["loadgen_errors"]:
        print(f"LoadGen error: {line}", file=sys.stderr)
    reasons = [r for r in (outcome["invalid_reason"], outcome["early_stopping_result"]) if r]
    if outcome["validity"] != "VALID" and reasons:
        print("why: " + " ".join(reasons), file=sys.stderr)
    value = outcome["value"]
    shown = f"{value / 1e6:.3f} ms" if outcome["unit"] == "ns" and value is not None else f"{value} {outcome['unit']}"
    print(f"{facts['scenario']} {outcome['metric']}: {shown}")
    print(outcome["validity"])
    return results
