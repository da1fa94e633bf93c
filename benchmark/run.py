"""One benchmark run, stage by stage: config, checkpoint, model, cache, predictions, results."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from preprocessing.cache import CropCache, open_cache
from preprocessing.dataset import Dataset, load_dataset
from preprocessing.pipelines import PipelineSettings, make_settings

from .checkpoint import Checkpoint, CheckpointError, file_digest, open_checkpoint
from .download import fetch, is_url
from .errors import ConfigError
from .graph import FrozenGraph, graph_input
from .normalize import Normalizer
from . import report


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imagenet-mlperf-harness"


def cache_dir(cfg: DictConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()


def resolve_image_size(graph_size: int | None, configured: int | None, source: str) -> int:
    """The graph's input size wins; a configured size that contradicts it is an error."""
    if graph_size is not None:
        if configured is not None and int(configured) != graph_size:
            raise ConfigError(f"model.image_size={configured} but {source} fixes its input to "
                              f"{graph_size}x{graph_size}")
        return graph_size
    if configured is None:
        raise ConfigError(f"{source} leaves the input size open: set model.image_size")
    return int(configured)


def require(cfg: DictConfig, key: str, hint: str = "") -> str:
    if OmegaConf.is_missing(cfg, key) or OmegaConf.select(cfg, key) is None:
        raise ConfigError(f"{key} is not set{hint}")
    return OmegaConf.select(cfg, key)


@dataclass
class Inputs:
    image_size: int
    dataset: Dataset
    settings: PipelineSettings


def checkpoint_dir(cfg: DictConfig) -> Path:
    return Path(cfg.checkpoint_dir).expanduser() if cfg.checkpoint_dir else default_cache_dir() / "checkpoints"


def model_checkpoint(cfg: DictConfig) -> Checkpoint:
    """The checkpoint named by model.checkpoint: a local file, or a URL downloaded (once) into
    checkpoint_dir. The model's published md5 applies to its own download URL."""
    hint = ""
    if cfg.model.get("download_url"):
        hint = f" (the model's download URL is {cfg.model.download_url})"
    source = require(cfg, "model.checkpoint", hint)
    if is_url(source):
        md5 = cfg.model.get("download_md5") if source == cfg.model.get("download_url") else None
        source = fetch(source, checkpoint_dir(cfg), md5, cfg.progress)
    if str(source).endswith(".safetensors"):  # a model written by benchmark.export
        path = Path(source).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file not found")
        return Checkpoint(path, file_digest(path), None, b"")
    return open_checkpoint(source)


def prepare(cfg: DictConfig, graph_size: int | None, source: str) -> Inputs:
    """Image size (the graph's, checked against the config), dataset and preprocessing settings."""
    image_size = resolve_image_size(graph_size, cfg.model.image_size, source)
    dataset = load_dataset(require(cfg, "dataset.root"), cfg.dataset.labels, cfg.dataset.limit,
                           allow_missing=cfg.dataset.on_error == "skip", layout=cfg.dataset.layout)
    pre = cfg.preprocess
    try:
        settings = make_settings(pre.name, image_size, pre.interpolation, pre.crop_percent, pre.decoder,
                                 pre.resize, pre.antialias, pre.crop_rounding)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return Inputs(image_size, dataset, settings)


def prepare_cache_only(cfg: DictConfig) -> Inputs:
    """For `python -m preprocessing`: the checkpoint is read only when the size must come from it."""
    if cfg.model.image_size is not None:
        return prepare(cfg, None, "the model")
    ckpt = model_checkpoint(cfg)
    return prepare(cfg, graph_input(FrozenGraph.from_checkpoint(ckpt))[1], ckpt.source)


def build_cache(cfg: DictConfig, inputs: Inputs) -> CropCache:
    return open_cache(inputs.dataset, inputs.settings, cache_dir(cfg), cfg.workers, cfg.progress,
                      cfg.dataset.on_error, cfg.dataset.verify)


def _torch_threads(cfg: DictConfig) -> int:
    import torch

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    return torch.get_num_threads()


def tf_logits(cfg: DictConfig, graph: FrozenGraph, image_size: int, images,
              normalize: Normalizer, threads: int, batch_size: int, timing: dict | None = None) -> np.ndarray:
    from . import evaluate
    from .tf_backend import TFGraphModel

    model = TFGraphModel(graph, cfg.model.input_tensor, cfg.model.logits_tensor, image_size, threads)
    try:
        return evaluate.graph_logits(model, images, normalize, batch_size, cfg.progress, timing=timing)
    finally:
        model.close()


@dataclass
class Setup:
    """Everything a run evaluates: the checkpoint, the model of the chosen backend, the cached crops
    of the readable images and their labels (shared by `python -m benchmark` and its LoadGen runs)."""
    ckpt: Checkpoint
    graph: object | None  # FrozenGraph (read only when TensorFlow runs it) or OnnxGraph
    model: object | None  # the converted PyTorch module (backend=torch)
    conversion: dict | None
    device: object  # torch.device, or "cpu" for TensorFlow
    threads: int
    batch_size: int
    inputs: Inputs
    cache: CropCache
    normalize: Normalizer
    readable: np.ndarray  # indices into the dataset of the images evaluated
    images: object  # their crops: the cache's array, or its readable rows
    labels: np.ndarray
    names: list[str]
    timing: dict  # seconds per stage: checkpoint_s, convert_s, cache_s, then the evaluation's
    onnx: object | None = None  # the OnnxGraph ONNX Runtime runs: the checkpoint, or the converted model
    cpu_fusion: bool = False  # the torch model runs with oneDNN-fused convolutions (CPU, batch norms folded)


BACKENDS = ("torch", "tf", "onnxruntime")


def check_backends(cfg: DictConfig) -> None:
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"backend={cfg.backend}: expected torch, tf or onnxruntime")
    if cfg.reference not in (None, "tf", "onnxruntime"):
        raise ConfigError(f"reference={cfg.reference}: expected tf, onnxruntime or null")
    if cfg.reference and (cfg.backend == "tf" or cfg.reference == cfg.backend):
        raise ConfigError(f"reference={cfg.reference} compares the torch backend (or onnxruntime running the "
                          f"converted model) with it, not backend={cfg.backend}")


def check_checkpoint_kind(cfg: DictConfig, ckpt: Checkpoint) -> None:
    """Each backend runs what it can: TensorFlow the frozen graph, ONNX Runtime the ONNX model, or
    the converted model exported to ONNX (backend=onnxruntime with a frozen graph or an export)."""
    if ckpt.path.suffix == ".safetensors" and (cfg.backend == "tf" or cfg.reference):
        needs = "backend=tf" if cfg.backend == "tf" else f"reference={cfg.reference}"
        raise ConfigError(f"{ckpt.path} is an exported PyTorch model: {needs} needs the checkpoint it was "
                          f"converted from")
    if ckpt.is_onnx and "tf" in (cfg.backend, cfg.reference):
        raise ConfigError(f"{ckpt.path} is an ONNX model: TensorFlow needs the frozen graph "
                          f"(use backend=onnxruntime or reference=onnxruntime)")
    if not ckpt.is_onnx and cfg.reference == "onnxruntime":
        raise ConfigError(f"{ckpt.source} is a TF frozen graph: ONNX Runtime needs an .onnx checkpoint "
                          f"to be a reference (MLPerf publishes both models as ONNX, see model.onnx_urls); "
                          f"backend=onnxruntime runs the converted model exported to ONNX")
    if ckpt.is_onnx and not cfg.fold_bn:
        raise ConfigError(f"fold_bn=false: {ckpt.path} is an ONNX model, whose batch norms tf2onnx has "
                          f"folded into the convolutions; it converts to the folded model only")


def setup(cfg: DictConfig) -> Setup:
    """Config to checkpoint, model and crop cache: every stage before the first prediction."""
    from . import evaluate  # PyTorch: this stage and later ones only

    check_backends(cfg)
    threads = _torch_threads(cfg)
    clock = time.perf_counter()
    ckpt = model_checkpoint(cfg)
    check_checkpoint_kind(cfg, ckpt)
    exported = ckpt.path.suffix == ".safetensors"
    # TensorFlow is loaded only when it runs (or a conversion needs the graph): importing it
    # slows PyTorch's CPU kernels down by about a fifth.
    if ckpt.is_onnx:
        from .convert import read_graph

        graph = read_graph(ckpt)  # any parse error before any preprocessing
    else:
        graph = FrozenGraph.from_checkpoint(ckpt) if "tf" in (cfg.backend, cfg.reference) else None
        if graph is not None:  # misnamed tensors are an error before any preprocessing
            graph.node(cfg.model.input_tensor), graph.node(cfg.model.logits_tensor)
    timing = {"checkpoint_s": round(time.perf_counter() - clock, 3), "convert_s": None}
    clock = time.perf_counter()
    model = conversion = None
    onnx = graph if ckpt.is_onnx else None
    own_onnx = cfg.backend == "onnxruntime" and not ckpt.is_onnx  # the converted model, exported
    if cfg.backend == "torch" or own_onnx:
        from .convert import load_converted

        try:
            device = evaluate.select_device(cfg.device if not own_onnx else "cpu")
        except RuntimeError as e:
            raise ConfigError(str(e)) from e
        if exported:
            from .convert import load_exported

            model, meta = load_exported(ckpt.path)
            if meta["arch"] != cfg.model.arch:
                raise ConfigError(f"{ckpt.path} holds {meta['arch']}, not model={cfg.model.name}")
            conversion = {"exported_from": meta["checkpoint"], "exported_from_sha256": meta["checkpoint_sha256"]}
        else:
            model, conversion = load_converted(cfg.model.arch, ckpt, graph, cache_dir(cfg))
        if cfg.fold_bn:
            from .layers import fold_batch_norms

            fold_batch_norms(model)
        graph_size = model.spec.image_size
        if own_onnx:
            from .onnx_export import OPSET, export_onnx

            device = "cuda" if str(cfg.device).startswith("cuda") else "cpu"
            onnx = export_onnx(model, resolve_image_size(graph_size, cfg.model.image_size, ckpt.source),
                               ckpt.source)
            conversion = {**conversion, "onnx": f"the converted model exported by torch.onnx (opset {OPSET})"}
            model = None
        timing["convert_s"] = round(time.perf_counter() - clock, 3)  # from the weight cache when there
    elif cfg.backend == "onnxruntime":
        from .convert.onnx import graph_input as onnx_input

        device = "cuda" if str(cfg.device).startswith("cuda") else "cpu"
        graph_size = onnx_input(graph)[1]
    else:
        device = "cpu"
        graph_size = graph_input(graph)[1]
    batch_size = cfg.batch_size or evaluate.default_batch_size(device)
    from . import cpu_fusion

    fused = model is not None and device.type == "cpu" and bool(cfg.fold_bn and cfg.cpu_fusion) and cpu_fusion.available()
    clock = time.perf_counter()
    inputs = prepare(cfg, graph_size, ckpt.source)
    cache = build_cache(cfg, inputs)
    timing["cache_s"] = round(time.perf_counter() - clock, 3)  # checking a built cache, or building it
    # Images that could not be read (dataset.on_error=skip) are left out, counted and listed.
    readable = np.array([i for i in range(len(inputs.dataset)) if i not in cache.failed], dtype=np.int64)
    if len(readable) == 0:
        raise ConfigError(f"none of the {len(inputs.dataset)} listed images could be read")
    images = cache.images if not cache.failed else evaluate.Rows(cache.images, readable)
    return Setup(ckpt, graph, model, conversion, device, threads, batch_size, inputs, cache,
                 Normalizer(cfg.model.normalization), readable, images,
                 np.asarray(inputs.dataset.labels)[readable], [inputs.dataset.names[i] for i in readable], timing,
                 onnx, fused)


def ort_logits(cfg: DictConfig, s: Setup, timing: dict | None = None) -> np.ndarray:
    from . import evaluate
    from .ort_backend import OrtModel

    try:
        model = OrtModel(s.onnx, s.threads, "cuda" if str(cfg.device).startswith("cuda") else "cpu")
    except RuntimeError as e:
        raise ConfigError(str(e)) from e
    return evaluate.graph_logits(model, s.images, s.normalize, s.batch_size, cfg.progress, "onnxruntime", timing)


def backend_logits(cfg: DictConfig, s: Setup) -> np.ndarray:
    """Every readable image's logits from the configured backend."""
    from . import evaluate

    if s.model is not None:
        return evaluate.torch_logits(s.model, s.images, s.normalize, s.device, s.batch_size, cfg.progress,
                                     s.timing, s.cpu_fusion)
    if cfg.backend == "onnxruntime":
        return ort_logits(cfg, s, s.timing)
    return tf_logits(cfg, s.graph, s.inputs.image_size, s.images, s.normalize, s.threads, s.batch_size, s.timing)


def reference_comparison(cfg: DictConfig, s: Setup, result, logits: np.ndarray) -> dict | None:
    """reference=tf or onnxruntime: the checkpoint itself in TensorFlow or ONNX Runtime on the same
    inputs, image by image (for ONNX, on the logits inside the graph, named in `tensor`)."""
    from . import evaluate

    if cfg.reference is None:
        return None
    timing: dict = {}
    if cfg.reference == "onnxruntime":
        from .ort_backend import logits_tensor

        ref_logits, tensor = ort_logits(cfg, s, timing), logits_tensor(s.onnx)
    else:
        ref_logits = tf_logits(cfg, s.graph, s.inputs.image_size, s.images, s.normalize, s.threads, s.batch_size,
                               timing)
        tensor = cfg.model.logits_tensor
    return {**report.compare(result, evaluate.score(ref_logits, s.labels), logits, ref_logits, s.names),
            "backend": cfg.reference, "tensor": tensor, "timing": timing}


def print_outcome(result, s: Setup, reference: dict | None, path: Path) -> None:
    """MLPerf's accuracy line on stdout; top-5, the reference's agreement and the results file on stderr."""
    skipped = f" (skipped {len(s.cache.failed)} of {len(s.inputs.dataset)} listed: unreadable, see " \
              f"'skipped' in the results)" if s.cache.failed else ""
    print(result.mlperf_line() + skipped)
    print(f"top5={result.top5:.3f}%", file=sys.stderr)
    if "eval_images_per_s" in s.timing:
        print(f"evaluation: {s.timing['eval_images_per_s']:.1f} images/s after the first batch, "
              f"{s.timing['eval_s']:.1f} s in all", file=sys.stderr)
    if reference:
        ties = sum(m <= 2 * reference["max_abs_logit_diff"] for m in reference["disagreement_margins"])
        differ = result.total - reference["agreement"]
        print(f"reference {reference['backend']}: accuracy={reference['top1']:.3f}%, good={reference['good']}; "
              f"agreement {reference['agreement']}/{result.total}"
              + (f" ({ties} of the {differ} differing are near-ties)" if differ else "")
              + f", max_abs_logit_diff={reference['max_abs_logit_diff']:.3g}")
    print(f"results: {path}", file=sys.stderr)


def run(cfg: DictConfig) -> dict:
    from . import evaluate

    started = time.time()
    s = setup(cfg)
    logits = backend_logits(cfg, s)
    result = evaluate.score(logits, s.labels)
    reference = reference_comparison(cfg, s, result, logits)
    results = report.results_dict(cfg, s, result, reference, time.time() - started)
    path = report.write_results(results, cfg)
    print_outcome(result, s, reference, path)
    return results
