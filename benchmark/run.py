"""One benchmark run, stage by stage: config, checkpoint, model (a runtime), cache, predictions, results."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from benchmark import precision, runtimes
from benchmark.evaluation import distributed, loop, real, report
from benchmark.evaluation.distributed import World
from benchmark.evaluation.gate import gate, reservations
from benchmark.evaluation.results import Comparison, RunFacts
from benchmark.evaluation.scoring import Score, score
from benchmark.families import judged_as, mlperf_departures, with_target
from benchmark.formats.checkpoint import Checkpoint
from benchmark.nn.transform import Transform, load_transform
from benchmark.runtimes.source import ModelSource, ModelSpec, is_mlperfs, open_model_checkpoint
from preprocessing.cache import CropCache
from preprocessing.errors import ConfigError
from preprocessing.stage import CacheSpec, DatasetSpec, Inputs, PipelineSpec, build_cache, default_cache_dir, prepare


def checkpoint_dir(cfg: DictConfig) -> Path:
    return Path(cfg.checkpoint_dir).expanduser() if cfg.checkpoint_dir else default_cache_dir() / "checkpoints"


def model_source(cfg: DictConfig) -> ModelSource:
    """The checkpoint model.checkpoint names (downloaded once if a URL), as a source of runtimes."""
    from preprocessing.stage import cache_dir

    model = ModelSpec.from_config(cfg.model)
    return ModelSource(open_model_checkpoint(model, checkpoint_dir(cfg), cfg.progress), model, cache_dir(cfg))


def runtime_options(cfg: DictConfig, threads: int | None, role: str = "backend",
                    numerics: str | None = None, transform=None) -> runtimes.Options:
    """The config's runtime settings; `numerics`: a precision other than the config's; `transform`:
    the user's transform of the model (backend only)."""
    return runtimes.Options(device=str(cfg.device), threads=threads, fold_bn=bool(cfg.fold_bn),
                            cpu_fusion=cfg.cpu_fusion, cuda_graphs=cfg.cuda_graphs, role=role,
                            precision=numerics or chosen_precision(cfg), transform=transform)


def chosen_precision(cfg: DictConfig) -> str:
    """precision= (fp32 where a config has none): read here once for a run (Setup.precision)."""
    return str(cfg.get("precision", "fp32"))


def reference_source(cfg: DictConfig, source: ModelSource) -> ModelSource:
    """What reference= runs: the model's own checkpoint; for a user's module (model=module), the MLPerf
    checkpoint it ports (reference_checkpoint=, by default the ported model's URL), as that model."""
    if not source.is_module:
        return source
    from benchmark import conf
    from preprocessing.stage import cache_dir

    ported = conf.load("model", judged_as(cfg.model))
    if cfg.get("reference_checkpoint"):
        ported.checkpoint = str(cfg.reference_checkpoint)
    ported = ModelSpec.from_config(ported)
    return ModelSource(open_model_checkpoint(ported, checkpoint_dir(cfg), cfg.progress), ported, cache_dir(cfg))


def check_reference(cfg: DictConfig) -> None:
    module = cfg.model.arch == "module"
    if module:
        if OmegaConf.is_missing(cfg.model, "module"):
            raise ConfigError("model.module is not set: the factory of your module (package.module:callable, "
                              "e.g. torchvision.models:resnet50)")
        judged_as(cfg.model)  # a module ports one of MLPerf's models
    runtimes.supports(cfg.backend, module=module)
    if cfg.get("reference_checkpoint") and not module:
        raise ConfigError(f"reference_checkpoint= names the MLPerf checkpoint a model=module ports; "
                          f"model={cfg.model.name}'s reference is its own checkpoint")
    if cfg.reference is not None:
        # a module's: the exact conversion (torch), tf or onnxruntime of the ported checkpoint
        runtimes.supports(cfg.reference, "reference", module=module, backend=cfg.backend)


@dataclass
class Setup:
    """Everything a run evaluates: the model's source and runtimes, the cached crops of the
    readable images and their labels (shared by `python -m benchmark` and its LoadGen runs)."""
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
    world: World = World()  # this process's place in a torchrun launch (one process: rank 0 of 1)
    reservations: tuple[str, ...] = ()  # why the target's verdict is not a submission's (evaluation/gate.py)
    exact_reservations: tuple[str, ...] = ()  # the same for the exact fp32 model (no calibration)
    transform: Transform | None = None  # model.transform: the user's transform the backend runs
    judged: str = ""  # the family whose MLPerf target the run is judged by (a module's: the one it ports)
    reference_source: ModelSource | None = None  # what reference= runs (a module's: the checkpoint it ports)
    precision: str = "fp32"  # precision= as the config asked (the runtime's own: runtime.precision)
    real: bool = False  # labels.real=true: ImageNet-ReaL's scores too

    @property
    def ckpt(self) -> Checkpoint:
        return self.source.ckpt

    @property
    def cpu_fusion(self) -> bool | str | None:
        """How the torch model's convolutions ran: "graph", true, false (None: another runtime)."""
        return self.runtime.cpu_fusion


def setup(cfg: DictConfig) -> Setup:
    """Config to checkpoint, runtimes and crop cache: every stage before the first prediction."""
    import torch

    check_reference(cfg)
    world = distributed.world(str(cfg.device))
    if world.size > 1 and str(cfg.device) in ("auto", "cuda") and torch.cuda.is_available():
        cfg = OmegaConf.merge(cfg, {"device": f"cuda:{world.local_rank}"})  # one GPU per rank
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    threads = torch.get_num_threads()
    # Every local input is checked before a checkpoint is opened (a first run downloads it): the
    # dataset listed, int8's calibration list read.
    datasets, caches = DatasetSpec.from_config(cfg), CacheSpec.from_config(cfg)
    dataset = datasets.listed()
    chosen, scored_real = chosen_precision(cfg), real_asked(cfg)
    cal = None
    if chosen == "int8":
        from preprocessing.calibration import read_list

        cal = read_list(str(cfg.calibration.list))
    clock = time.perf_counter()
    source = model_source(cfg)
    opened = time.perf_counter() - clock
    # Each runtime reads or converts what it runs; a misnamed tensor or a refused combination is an
    # error here, before any preprocessing.
    transform = load_transform(cfg.model.get("transform"))
    precision.check_transform(cfg.model.arch, chosen, cfg.backend, transform)
    runtime = runtimes.create(cfg.backend, source, runtime_options(cfg, threads, transform=transform))
    ref_source = reference_source(cfg, source) if cfg.reference else None
    # the reference runs the checkpoint's own float32 arithmetic, whatever precision the backend runs
    reference = runtimes.create(cfg.reference, ref_source, runtime_options(cfg, threads, "reference", "fp32")) \
        if cfg.reference else None
    if reference is not None and reference.image_size not in (None, runtime.image_size):
        raise ConfigError(f"reference={cfg.reference}: {ref_source.ckpt.source} takes {reference.image_size}x"
                          f"{reference.image_size} images, the model {runtime.image_size}x{runtime.image_size}")
    exact = precision.exact_runtime(chosen, cfg.backend, source,
                                    runtime_options(cfg, threads, numerics="fp32"), transform)
    timing = {"checkpoint_s": round(opened + source.timing.get("checkpoint_s", 0.0), 3),
              "convert_s": source.timing.get("convert_s")}  # from the weight cache when there
    batch_size = cfg.batch_size or runtimes.default_batch_size(runtime.device)
    clock = time.perf_counter()
    inputs = prepare(dataset, PipelineSpec.from_config(cfg), runtime.image_size)
    if scored_real:
        real.check(inputs.dataset.names)  # before any image is read
    cache = build_cache(caches, inputs)
    timing["cache_s"] = round(time.perf_counter() - clock, 3)  # checking a built cache, or building it
    # Images that could not be read (dataset.on_error=skip) are left out, counted and listed.
    readable = np.array([i for i in range(len(inputs.dataset)) if i not in cache.failed], dtype=np.int64)
    if len(readable) == 0:
        raise ConfigError(f"none of the {len(inputs.dataset)} listed images could be read")
    images = cache.images if not cache.failed else loop.Rows(cache.images, readable)
    calibration = precision.calibrate(runtime, source.ckpt.sha256, inputs, batch_size, cal, cfg.calibration.min_images,
                                      datasets, caches, cfg.model.name, bool(cfg.fold_bn)) \
        if runtime.precision == "int8" else None
    checkpoint = source.ckpt.source  # the file (and archive member) as given
    mlperfs = is_mlperfs(source.model, source.ckpt)
    judged = judged_as(cfg.model)
    pipeline = mlperf_departures(judged, inputs.settings) if judged in with_target() else []
    module = source.conversion["module"]["target"] if source.is_module else None
    return Setup(source, runtime, reference, exact, calibration, threads, batch_size, inputs, cache, readable, images,
                 np.asarray(inputs.dataset.labels)[readable], [inputs.dataset.names[i] for i in readable], timing,
                 world, reservations(judged, checkpoint, mlperfs, calibration, transform, module, pipeline),
                 reservations(judged, checkpoint, mlperfs, None, None, module, pipeline), transform, judged, ref_source,
                 chosen, scored_real)


def real_asked(cfg: DictConfig) -> bool:
    """labels.real=true: ImageNet-ReaL's scores too."""
    return bool((cfg.get("labels") or {}).get("real"))


def run_facts(cfg: DictConfig, s: Setup) -> RunFacts:
    """What was run, on what, with what: the config and the Setup read here, once, for the results."""
    inputs, cache, ckpt, runtime = s.inputs, s.cache, s.ckpt, s.runtime
    return RunFacts(
        model=cfg.model.name, arch=cfg.model.arch, judged_as=s.judged,
        checkpoint={"path": str(ckpt.path), "member": ckpt.member, "sha256": ckpt.sha256},
        image_size=inputs.image_size, preprocess={**inputs.settings.to_dict(), "cache": str(cache.folder)},
        normalization=cfg.model.normalization, backend=cfg.backend, device=runtime.device,
        runtime_version=runtime.version, precision=runtime.precision, numerics=runtime.numerics,
        transform=s.transform.to_dict() if s.transform is not None else None, batch_size=s.batch_size,
        fold_bn=runtime.folded, cpu_fusion=runtime.cpu_fusion, cuda_graphs=runtime.cuda_graphs, threads=s.threads,
        distributed=s.world.to_dict() if s.world.size > 1 else None,
        dataset={"root": str(inputs.dataset.root), "layout": inputs.dataset.layout,
                 "label_set": inputs.dataset.label_set, "labels_from": inputs.dataset.labels_from,
                 "labels": str(inputs.dataset.labels_file) if inputs.dataset.labels_file else None,
                 "absent_validation_images": inputs.dataset.absent, "limit": cfg.dataset.limit,
                 "listed": len(inputs.dataset), "on_error": cfg.dataset.on_error},
        skipped=[{"file": inputs.dataset.names[i], "reason": reason} for i, reason in sorted(cache.failed.items())],
        conversion=s.source.conversion, config=OmegaConf.to_container(cfg, resolve=True))


def results_dict(cfg: DictConfig, s: Setup, result: Score, reference: Comparison | None, elapsed: float,
                 against_exact: Comparison | None = None) -> dict:
    """The results JSON of an accuracy run (evaluation/report.py), from the config and the Setup."""
    return report.results_dict(run_facts(cfg, s), result, s.inputs.dataset.names, s.inputs.dataset.labels,
                               s.readable.tolist(), gate(s.judged, result.top1, result.total, s.reservations),
                               s.real, reference, elapsed, against_exact, s.calibration, s.timing)


def results_path(cfg: DictConfig, default: Path | None = None) -> Path:
    """Where the results go: results_file=, else `default` (a LoadGen run's folder), else results/runs/."""
    if cfg.results_file:
        return Path(cfg.results_file).expanduser()
    return default if default is not None else report.default_results_path(cfg.model.name, cfg.preprocess.name,
                                                                           cfg.backend)


def evaluate(cfg: DictConfig, s: Setup, runtime: runtimes.Runtime, timing: dict) -> np.ndarray | None:
    """Every image's logits from `runtime`, which is closed after. Launched by torchrun, each rank
    evaluates its share and rank 0 gets all of them in image order (the other ranks None); `timing`
    gets this rank's loop figures, and with more than one rank the images/s of all of them together."""
    clock = time.perf_counter()
    try:
        part = loop.logits(runtime, loop.part(s.images, s.world.share(len(s.images))), s.batch_size,
                           cfg.progress and s.world.main, timing)
    finally:
        runtime.close()
    logits = s.world.gather(part)
    if s.world.size > 1 and logits is not None:
        timing["all_ranks_images_per_s"] = round(len(logits) / (time.perf_counter() - clock), 2)
    return logits


def reference_comparison(cfg: DictConfig, s: Setup, result: Score, logits: np.ndarray,
                         ref_logits: np.ndarray | None = None, timing: dict | None = None) -> Comparison | None:
    """reference=tf or onnxruntime: the checkpoint itself in TensorFlow or ONNX Runtime on the same
    inputs, image by image (for ONNX, on the logits inside the graph, named in `tensor`); its logits
    evaluated here unless given."""
    if s.reference is None:
        return None
    if ref_logits is None:
        timing = {}
        ref_logits = evaluate(cfg, s, s.reference, timing)
    model = s.reference_source.model
    ckpt = s.reference_source.ckpt
    other = {"backend": cfg.reference,
             "tensor": s.reference.logits_tensor or model.logits_tensor,  # torch's (a module's exact model): the graph's
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
        print(precision.summary(against_exact, s.precision, s.transform.to_dict() if s.transform else None,
                                s.timing.get("eval_images_per_s")))
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
    s = setup(cfg)
    logits = evaluate(cfg, s, s.runtime, s.timing)
    ref_timing: dict = {}
    exact_timing: dict = {}
    ref_logits = evaluate(cfg, s, s.reference, ref_timing) if s.reference is not None else None
    exact_logits = evaluate(cfg, s, s.exact, exact_timing) if s.exact is not None else None
    s.world.close()
    if not s.world.main:
        return None
    result = score(logits, s.labels)
    against_exact = precision.against_exact(
        result, logits, exact_logits, s.labels, s.names, s.readable.tolist(), len(s.inputs.dataset), s.judged,
        s.exact_reservations, exact_timing, s.exact.numerics) if s.exact is not None else None
    reference = reference_comparison(cfg, s, result, logits, ref_logits, ref_timing)
    results = results_dict(cfg, s, result, reference, time.time() - started, against_exact)
    path = report.write_results(results, results_path(cfg))
    print_outcome(result, s, reference, path, against_exact, results["real"])
    return results
