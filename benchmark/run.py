"""One benchmark run, stage by stage: config (resolved once: spec.RunSpec), checkpoint, model (a runtime),
cache, predictions, results."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from benchmark import precision, runtimes
from benchmark.evaluation import distributed, loop, real, report
from benchmark.evaluation.distributed import World
from benchmark.evaluation.gate import gate, reservations
from benchmark.evaluation.results import Comparison, RunFacts
from benchmark.evaluation.scoring import Score, score
from benchmark.families import mlperf_departures, with_target
from benchmark.formats.checkpoint import Checkpoint
from benchmark.runtimes.source import ModelSource, ModelSpec, is_mlperfs, open_model_checkpoint
from benchmark.spec import RunSpec
from preprocessing.cache import CropCache
from preprocessing.errors import ConfigError
from preprocessing.stage import Inputs, build_cache, prepare


def model_source(model: ModelSpec, checkpoint_dir: Path, cache_folder: Path, progress: bool = True) -> ModelSource:
    """The checkpoint `model` names (downloaded once into `checkpoint_dir` if a URL), as a source of
    runtimes (its converted weights cached under `cache_folder`)."""
    return ModelSource(open_model_checkpoint(model, checkpoint_dir, progress), model, cache_folder)


def reference_source(spec: RunSpec, source: ModelSource) -> ModelSource:
    """What reference= runs: the model's own checkpoint; for a user's module (model=module), the MLPerf
    checkpoint it ports (reference_checkpoint=, by default the ported model's URL), as that model."""
    if not source.is_module:
        return source
    return model_source(spec.ported, spec.checkpoint_dir, spec.cache_folder, spec.progress)


@dataclass
class Setup:
    """Everything a run evaluates: the run's spec, the model's source and runtimes, the cached crops
    of the readable images and their labels (shared by `python -m benchmark` and its LoadGen runs)."""
    spec: RunSpec  # the run as the command resolved it (its device: this rank's)
    source: ModelSource
    runtime: runtimes.Runtime  # backend=
    reference: runtimes.Runtime | None  # reference=
    exact: runtimes.Runtime | None  # precision= other than fp32: the exact fp32 model, compared image by image
    calibration: dict | None  # precision=int8: the list, the images found and missing, the quantized model
    threads: int  # CPU threads of PyTorch (and of TensorFlow and ONNX Runtime)
    batch_size: int
    inputs: Inputs
    cache: CropCache
    readable: np.ndarray  # indices into the dataset of the images evaluated
    images: object  # their crops: the cache's array, or its readable rows (loop.Rows)
    labels: np.ndarray
    names: list[str]
    timing: dict  # seconds per stage: checkpoint_s, convert_s, cache_s, then the evaluation's
    world: World  # this process's place in a torchrun launch (one process: rank 0 of 1)
    reservations: tuple[str, ...]  # why the target's verdict is not a submission's (evaluation/gate.py)
    exact_reservations: tuple[str, ...]  # the same for the exact fp32 model (no calibration)
    reference_source: ModelSource | None  # what reference= runs (a module's: the checkpoint it ports)

    @property
    def judged(self) -> str:
        """The family whose MLPerf target the run is judged by (a module's: the one it ports)."""
        return self.spec.judged

    @property
    def ckpt(self) -> Checkpoint:
        return self.source.ckpt

    @property
    def cpu_fusion(self) -> bool | str | None:
        """How the torch model's convolutions ran: "graph", true, false (None: another runtime)."""
        return self.runtime.cpu_fusion


def setup(spec: RunSpec) -> Setup:
    """The run's parts to checkpoint, runtimes and crop cache: every stage before the first prediction."""
    import torch

    world = distributed.world(spec.device)
    if world.size > 1 and spec.device in ("auto", "cuda") and torch.cuda.is_available():
        spec = spec.on_device(f"cuda:{world.local_rank}")  # one GPU per rank
    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    threads = torch.get_num_threads()
    # Every local input is checked before a checkpoint is opened (a first run downloads it): the
    # dataset listed, int8's calibration list read.
    dataset = spec.dataset.listed()
    cal = None
    if spec.precision == "int8":
        from preprocessing.calibration import read_list

        cal = read_list(spec.calibration_list)
    clock = time.perf_counter()
    source = model_source(spec.model, spec.checkpoint_dir, spec.cache_folder, spec.progress)
    opened = time.perf_counter() - clock
    # Each runtime reads or converts what it runs; a misnamed tensor or a refused combination is an
    # error here, before any preprocessing.
    transform = spec.transform
    precision.check_transform(spec.model.arch, spec.precision, spec.backend, transform)
    runtime = runtimes.create(spec.backend, source, spec.options(threads, transform=transform))
    ref_source = reference_source(spec, source) if spec.reference else None
    # the reference runs the checkpoint's own float32 arithmetic, whatever precision the backend runs
    reference = runtimes.create(spec.reference, ref_source, spec.options(threads, "reference", "fp32")) \
        if spec.reference else None
    if reference is not None and reference.image_size not in (None, runtime.image_size):
        raise ConfigError(f"reference={spec.reference}: {ref_source.ckpt.source} takes {reference.image_size}x"
                          f"{reference.image_size} images, the model {runtime.image_size}x{runtime.image_size}")
    exact = precision.exact_runtime(spec.precision, spec.backend, source, spec.options(threads, numerics="fp32"),
                                    transform)
    timing = {"checkpoint_s": round(opened + source.timing.get("checkpoint_s", 0.0), 3),
              "convert_s": source.timing.get("convert_s")}  # from the weight cache when there
    batch_size = spec.batch_size or runtimes.default_batch_size(runtime.device)
    clock = time.perf_counter()
    inputs = prepare(dataset, spec.pipeline, runtime.image_size)
    if spec.real:
        real.check(inputs.dataset.names)  # before any image is read
    cache = build_cache(spec.cache, inputs)
    timing["cache_s"] = round(time.perf_counter() - clock, 3)  # checking a built cache, or building it
    # Images that could not be read (dataset.on_error=skip) are left out, counted and listed.
    readable = np.array([i for i in range(len(inputs.dataset)) if i not in cache.failed], dtype=np.int64)
    if len(readable) == 0:
        raise ConfigError(f"none of the {len(inputs.dataset)} listed images could be read")
    images = cache.images if not cache.failed else loop.Rows(cache.images, readable)
    calibration = precision.calibrate(runtime, source.ckpt.sha256, inputs, batch_size, cal, spec.calibration_min_images,
                                      spec.dataset, spec.cache, spec.model.name, spec.fold_bn) \
        if runtime.precision == "int8" else None
    checkpoint = source.ckpt.source  # the file (and archive member) as given
    mlperfs = is_mlperfs(source.model, source.ckpt)
    judged = spec.judged
    pipeline = mlperf_departures(judged, inputs.settings) if judged in with_target() else []
    module = source.conversion["module"]["target"] if source.is_module else None
    return Setup(
        spec=spec, source=source, runtime=runtime, reference=reference, exact=exact, calibration=calibration,
        threads=threads, batch_size=batch_size, inputs=inputs, cache=cache, readable=readable, images=images,
        labels=np.asarray(inputs.dataset.labels)[readable], names=[inputs.dataset.names[i] for i in readable],
        timing=timing, world=world,
        reservations=reservations(judged, checkpoint, mlperfs, calibration, transform, module, pipeline),
        exact_reservations=reservations(judged, checkpoint, mlperfs, None, None, module, pipeline),
        reference_source=ref_source)


def run_facts(s: Setup) -> RunFacts:
    """What was run, on what, with what: the run's spec and Setup read here, once, for the results."""
    spec, inputs, cache, ckpt, runtime = s.spec, s.inputs, s.cache, s.ckpt, s.runtime
    return RunFacts(
        model=spec.model.name, arch=spec.model.arch, judged_as=spec.judged,
        checkpoint={"path": str(ckpt.path), "member": ckpt.member, "sha256": ckpt.sha256},
        image_size=inputs.image_size, preprocess={**inputs.settings.to_dict(), "cache": str(cache.folder)},
        normalization=spec.model.normalization, backend=spec.backend, device=runtime.device,
        runtime_version=runtime.version, precision=runtime.precision, numerics=runtime.numerics,
        transform=spec.transform.to_dict() if spec.transform is not None else None, batch_size=s.batch_size,
        fold_bn=runtime.folded, cpu_fusion=runtime.cpu_fusion, cuda_graphs=runtime.cuda_graphs, threads=s.threads,
        distributed=s.world.to_dict() if s.world.size > 1 else None,
        dataset={"root": str(inputs.dataset.root), "layout": inputs.dataset.layout,
                 "label_set": inputs.dataset.label_set, "labels_from": inputs.dataset.labels_from,
                 "labels": str(inputs.dataset.labels_file) if inputs.dataset.labels_file else None,
                 "absent_validation_images": inputs.dataset.absent, "limit": spec.dataset.limit,
                 "listed": len(inputs.dataset), "on_error": spec.dataset.on_error},
        skipped=[{"file": inputs.dataset.names[i], "reason": reason} for i, reason in sorted(cache.failed.items())],
        conversion=s.source.conversion, config=spec.config)


def results_dict(s: Setup, result: Score, reference: Comparison | None, elapsed: float,
                 against_exact: Comparison | None = None) -> dict:
    """The results JSON of an accuracy run (evaluation/report.py), from the Setup."""
    return report.results_dict(run_facts(s), result, s.inputs.dataset.names, s.inputs.dataset.labels,
                               s.readable.tolist(), gate(s.judged, result.top1, result.total, s.reservations),
                               s.spec.real, reference, elapsed, against_exact, s.calibration, s.timing)


def results_path(spec: RunSpec, default: Path | None = None) -> Path:
    """Where the results go: results_file=, else `default` (a LoadGen run's folder), else results/runs/."""
    if spec.results_file is not None:
        return spec.results_file
    return default if default is not None else report.default_results_path(spec.model.name, spec.pipeline.name,
                                                                           spec.backend)


def evaluate(s: Setup, runtime: runtimes.Runtime, timing: dict) -> np.ndarray | None:
    """Every image's logits from `runtime`, which is closed after. Launched by torchrun, each rank
    evaluates its share and rank 0 gets all of them in image order (the other ranks None); `timing`
    gets this rank's loop figures, and with more than one rank the images/s of all of them together."""
    clock = time.perf_counter()
    try:
        part = loop.logits(runtime, loop.part(s.images, s.world.share(len(s.images))), s.batch_size,
                           s.spec.progress and s.world.main, timing)
    finally:
        runtime.close()
    logits = s.world.gather(part)
    if s.world.size > 1 and logits is not None:
        timing["all_ranks_images_per_s"] = round(len(logits) / (time.perf_counter() - clock), 2)
    return logits


def reference_comparison(s: Setup, result: Score, logits: np.ndarray,
                         ref_logits: np.ndarray | None = None, timing: dict | None = None) -> Comparison | None:
    """reference=tf or onnxruntime: the checkpoint itself in TensorFlow or ONNX Runtime on the same
    inputs, image by image (for ONNX, on the logits inside the graph, named in `tensor`); its logits
    evaluated here unless given."""
    if s.reference is None:
        return None
    if ref_logits is None:
        timing = {}
        ref_logits = evaluate(s, s.reference, timing)
    model = s.reference_source.model
    ckpt = s.reference_source.ckpt
    other = {"backend": s.spec.reference,
             # torch's (a module's exact model): the graph's
             "tensor": s.reference.logits_tensor or s.reference_source.tensors[1],
             "checkpoint": {"path": str(ckpt.path), "member": ckpt.member, "sha256": ckpt.sha256,
                            "model": model.name, "mlperfs": is_mlperfs(model, ckpt)},
             "device": s.reference.device, "devices": s.reference.devices,  # where it ran
             "cpu_fusion": s.reference.cpu_fusion,  # torch's: how the exact model ran
             "version": s.reference.version}
    ref = score(ref_logits, s.labels)
    return report.compare("reference", other, result, ref, logits, ref_logits, s.labels, s.names,
                          ref.calls(s.readable.tolist(), len(s.inputs.dataset)), timing=timing)


def print_outcome(result: Score, s: Setup, reference: Comparison | None, path: Path,
                  against_exact: Comparison | None = None, real_score: dict | None = None) -> None:
    """MLPerf's accuracy line on stdout; top-5, the reference's agreement and the results file on stderr."""
    skipped = f" (skipped {len(s.cache.failed)} of {len(s.inputs.dataset)} listed: unreadable, see " \
              f"'skipped' in the results)" if s.cache.failed else ""
    print(result.mlperf_line() + skipped)
    target = gate(s.judged, result.top1, result.total, s.reservations)
    if target:
        print(target.line())
    if against_exact is not None:
        transform = s.spec.transform.to_dict() if s.spec.transform else None
        print(precision.summary(against_exact, s.spec.precision, transform, s.timing.get("eval_images_per_s")))
    print(f"top5={result.top5:.3f}%", file=sys.stderr)
    if real_score is not None:
        print(real.line(real_score), file=sys.stderr)
    if "eval_images_per_s" in s.timing:
        print(f"evaluation: {s.timing['eval_images_per_s']:.1f} images/s after the first batch, "
              f"{s.timing['eval_s']:.1f} s in all", file=sys.stderr)
    if reference:
        ties, differ = reference.near_ties, result.total - reference.agreement
        noise = f"the reference's margin under {reference.near_tie_margin:.2g}, within numerical noise"
        print(f"reference {reference.other['backend']}: accuracy={reference.scores.top1:.3f}%, "
              f"good={reference.scores.good}; agreement {reference.agreement}/{result.total}"
              + ((f" ({ties} of the {differ} differing are near-ties: {noise})" if ties else
                  f" (none of the {differ} differing is a near-tie, {noise})") if differ else "")
              + f", max_abs_logit_diff={reference.max_abs_logit_diff:.3g}")
    print(f"results: {path}", file=sys.stderr)


def run(cfg: DictConfig) -> dict | None:
    """One run; launched by torchrun, every rank evaluates its share and rank 0 alone scores,
    prints and writes the results (the other ranks return None)."""
    started = time.time()
    spec = RunSpec.from_config(cfg)  # the config read here, once: every stage below takes its parts
    s = setup(spec)
    logits = evaluate(s, s.runtime, s.timing)
    ref_timing: dict = {}
    exact_timing: dict = {}
    ref_logits = evaluate(s, s.reference, ref_timing) if s.reference is not None else None
    exact_logits = evaluate(s, s.exact, exact_timing) if s.exact is not None else None
    s.world.close()
    if not s.world.main:
        return None
    result = score(logits, s.labels)
    against_exact = precision.against_exact(
        result, logits, exact_logits, s.labels, s.names, s.readable.tolist(), len(s.inputs.dataset), s.judged,
        s.exact_reservations, exact_timing, s.exact.numerics) if s.exact is not None else None
    reference = reference_comparison(s, result, logits, ref_logits, ref_timing)
    results = results_dict(s, result, reference, time.time() - started, against_exact)
    path = report.write_results(results, results_path(spec))
    print_outcome(result, s, reference, path, against_exact, results["real"])
    return results
