"""precision= other than fp32 or a model.transform=: the faster or transformed model judged image by
image against the exact fp32 model on the same crops, and int8's calibration on MLPerf's calibration
list."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmark import runtimes
from benchmark.evaluation.gate import gate
from benchmark.evaluation.scoring import score
from benchmark.evaluation.report import compare
from benchmark.evaluation.results import Comparison, Verdict
from preprocessing.calibration import CalibrationList, calibration_dataset, needed
from preprocessing.errors import ConfigError
from preprocessing.stage import CacheSpec, DatasetSpec, Inputs, build_cache


def check_transform(arch: str, precision: str, backend: str, transform) -> None:
    """A transform is of the torch backend's converted model; with int8 it is refused (the harness
    quantizes its own conversion with its own recipe: quantize in the transform instead), and so is
    int8 of a user's module (model=module)."""
    if arch == "module" and precision == "int8":
        raise ConfigError("precision=int8 with model=module: the harness quantizes its own conversion with its own "
                          "recipe, not your module; quantize in the module or a transform (precision=fp32)")
    if transform is None:
        return
    runtimes.supports(backend, transform=transform)
    if precision == "int8":
        raise ConfigError(f"model.transform={transform.target} with precision=int8: the harness quantizes its own "
                          f"conversion with its own recipe, not a transformed model; quantize in the transform "
                          f"(precision=fp32), or run precision=int8 without it")


def exact_runtime(precision: str, backend: str, source, options: runtimes.Options, transform=None):
    """The exact fp32 torch model a precision= or model.transform= run is compared with (None for an
    exact run)."""
    if precision == "fp32" and transform is None:
        return None
    runtimes.supports(backend, precision=precision)
    return runtimes.create("torch", source, options)


def model_digest(model) -> str:
    """sha256 of a module's structure (its repr: layers, strides, paddings) and every tensor of its
    state dict (name, dtype, shape, bytes)."""
    h = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def code_digest(module_file: str) -> str:
    """sha256 of the model code's package (benchmark/nn/: the layers, models and quantization recipe)."""
    h = hashlib.sha256()
    for path in sorted(Path(module_file).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def calibrate(runtime, checkpoint_sha256: str, inputs: Inputs, batch_size: int, cal: CalibrationList,
              min_images: int | None, dataset: DatasetSpec, caches: CacheSpec, model_name: str, fold_bn: bool) -> dict:
    """int8: the images of the calibration list `cal` (calibration.list, read; `min_images`: how few may
    do) found in the dataset (all of it, not dataset.limit's part) cropped by the evaluation's
    pipeline and cached, the model quantized on them; the quantized model is kept in the cache,
    keyed on what it was made from: the checkpoint, the converted model itself, the normalisation,
    the list, the pipeline's crops, the model and quantization code, the library versions and the
    engine."""
    import torch

    from benchmark.nn import quantize
    from benchmark.nn.quantize import recipe

    clock = time.perf_counter()
    if cal.note:
        print(f"calibration: {cal.note}", file=sys.stderr)
    full = dataset.listed(whole=True)
    subset, missing = calibration_dataset(full, cal, min_images)
    if missing:
        print(f"calibration: {len(missing)} of the {len(cal.names)} images of {cal.path} are not in "
              f"{full.root}: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""), file=sys.stderr)
    crops = build_cache(caches, Inputs(inputs.image_size, subset, inputs.settings))
    # An image that could not be read (dataset.on_error=skip) is a blank crop in the cache: left out
    # of calibration, counted and named, never fed to the observers.
    unreadable = [subset.names[i] for i in sorted(crops.failed)]
    readable = np.array([i for i in range(len(subset)) if i not in crops.failed], dtype=np.int64)
    need = needed(cal, min_images)
    if unreadable:
        print(f"calibration: {len(unreadable)} listed image(s) could not be read and are left out: "
              f"{', '.join(unreadable[:10])}" + (" ..." if len(unreadable) > 10 else ""), file=sys.stderr)
    if len(readable) < need:
        raise ConfigError(f"calibration: {len(readable)} of the images of {cal.path} could be read "
                          f"({len(unreadable)} unreadable: {', '.join(unreadable[:5])}), {need} needed "
                          f"(calibration.min_images= allows fewer)")
    key = hashlib.sha256(json.dumps({
        "checkpoint": checkpoint_sha256, "list": cal.sha256, "crops": crops.folder.name,
        "torch": torch.__version__, "recipe": recipe().to_dict(), "fold_bn": bool(fold_bn),
        # what was quantized: the converted model (a converter fix changes it) and its input's normalisation
        "model": model_digest(runtime.model),
        "normalizer": hashlib.sha256(runtime.normalize.table.tobytes()).hexdigest(),
        # the code that runs it and the recipe: a change to either never reuses a model made before
        "code": code_digest(quantize.__file__)},
        sort_keys=True).encode()).hexdigest()
    saved = caches.folder / "int8" / f"{model_name}-{key[:20]}.pt"
    reused = saved.is_file()
    saved.parent.mkdir(parents=True, exist_ok=True)
    runtime.quantize(np.asarray(crops.images)[readable], batch_size, saved)
    return {**cal.to_dict(), "images": len(readable), "missing": missing, "unreadable": unreadable,
            "crops": str(crops.folder),
            "quantized_model": str(saved), "reused": reused, "engine": recipe().engine,
            "activation_bits": recipe().activation_bits, "weight_bits": recipe().weight_bits,
            "bias_correction": recipe().bias_correction, "backend_config": recipe().backend_config,
            "seconds": round(time.perf_counter() - clock, 3)}


def against_exact(result, logits: np.ndarray, exact_logits: np.ndarray, labels: np.ndarray, names: list[str],
                  readable: list[int], listed: int, judged: str, exact_reservations: tuple[str, ...], timing: dict,
                  exact_numerics: dict | None) -> Comparison:
    """The run (`result`, `logits`) against the exact fp32 model's logits on the same crops, in the
    one Comparison shape: both top-1s, the images the run fixes and breaks (McNemar's p), the largest
    logit difference, MLPerf's gate for the exact model (the family `judged`, its reservations) and
    its speed (`timing`). `labels`/`names`: of the images scored, at `readable` among the `listed` ones."""
    exact = score(exact_logits, labels)
    fp32_gate = gate(judged, exact.top1, exact.total, exact_reservations)
    return compare("exact", {"precision": "fp32", "numerics": exact_numerics}, result, exact, logits, exact_logits,
                   labels, names, exact.calls(readable, listed), Verdict(**fp32_gate.to_dict()) if fp32_gate else None,
                   timing)


def run_name(precision: str, transform: dict | None) -> str:
    """What ran against exact fp32: the precision, the transform, or both."""
    t = transform
    named = f"transform {t['target']}" + (f" {t['kwargs']}" if t["kwargs"] else "") if t else None
    if named and precision != "fp32":
        return f"{precision} with {named}"
    return named or precision


def summary(c: Comparison, precision: str, transform: dict | None, speed: float | None) -> str:
    """The comparison with exact fp32 in a line: `precision` and `transform` ran at `speed` images/s."""
    shown = ""
    if speed and c.images_per_s:
        shown = f"; {speed:.1f} against {c.images_per_s:.1f} images/s ({speed / c.images_per_s:.2f}x)"
    return (f"{run_name(precision, transform)} against exact fp32 on the same {c.scores.total} images: fp32 "
            f"accuracy={c.scores.top1:.3f}%, good={c.scores.good}; {c.agreement} same top-1, {c.fixed} fixed, "
            f"{c.broken} broken (McNemar p={c.mcnemar_p:.3g}); max_abs_logit_diff={c.max_abs_logit_diff:.3g}" + shown)
