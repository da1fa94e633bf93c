"""Reporting stage: MLPerf's accuracy line and the results JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from benchmark.evaluation import real
from benchmark.evaluation.gate import gate
from benchmark.evaluation.metrics import measured
from benchmark.evaluation.results import stamped
from benchmark.evaluation.scoring import NUM_CLASSES
from preprocessing.files import write_text_atomically

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def library_versions() -> dict:
    import cv2
    import PIL
    import torch

    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "tensorflow": tensorflow_version(),
            "opencv": cv2.__version__, "pillow": PIL.__version__}


def tensorflow_version() -> str | None:
    """TensorFlow's version without importing it (slow), whichever distribution provides it."""
    from preprocessing.pipelines import distribution_providers, library_version

    return library_version("tensorflow") if "tensorflow" in distribution_providers() else None


def git_commit() -> dict:
    """The commit of the harness's own checkout; None for an installed package (a virtual
    environment inside some other repository must not report that repository's commit)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        toplevel = git("rev-parse", "--show-toplevel")
        if not toplevel or Path(toplevel).resolve() != PROJECT_ROOT:
            return {"commit": None, "dirty": None}
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def near_tie_margin(ref_logits: np.ndarray) -> float:
    """The reference's top-1 margin under which a disagreement is a near-tie: a tie within numerical
    noise, which any correct computation of the same model may break either way. Twice the larger of
    1e-4 (the largest logit difference a correct conversion shows against TensorFlow: 7e-5 on the real
    0.25/224 graph) and 16 float32 ulps of the reference's largest logit. It never grows with the
    difference under test: a port 15 logits off does not make its disagreements near-ties."""
    scale = float(np.abs(ref_logits).max()) if ref_logits.size else 0.0
    return 2 * max(1e-4, 16 * float(np.finfo(np.float32).eps) * scale)


def compare(result, ref, logits: np.ndarray, ref_logits: np.ndarray, names: list[str]) -> dict:
    """Image-by-image agreement of two backends' top-1 and the largest logit difference (over the
    1000 classes where one has MLPerf's background output at index 0 and the other not)."""
    if logits.shape[1] != ref_logits.shape[1]:
        logits, ref_logits = logits[:, -NUM_CLASSES:], ref_logits[:, -NUM_CLASSES:]
    same = result.predictions == ref.predictions
    differ = np.flatnonzero(~same)
    top2 = np.sort(ref_logits[differ], axis=1)[:, -2:]
    margins, tie = top2[:, 1] - top2[:, 0], near_tie_margin(ref_logits)
    return {
        "top1": ref.top1, "top5": ref.top5, "good": ref.good, "total": ref.total,
        "agreement": int(same.sum()),
        "disagreements": [names[i] for i in differ],
        # The reference's top-1 minus its runner-up on each. Logits that differ by at most d can
        # change the top-1 only where that margin is at most 2d; a margin within numerical noise
        # (near_tie_margin) is a near-tie that any correct computation may break either way.
        "disagreement_margins": margins.tolist(),
        "near_tie_margin": tie, "near_ties": int((margins <= tie).sum()),
        "max_abs_logit_diff": float(np.abs(logits.astype(np.float64) - ref_logits).max()),
        "logit_range": float(ref_logits.max() - ref_logits.min()),
    }


def run_facts(cfg: DictConfig, s) -> dict:
    """What was run, on what, with what (run.Setup): the fields every results JSON has."""
    inputs, cache, ckpt = s.inputs, s.cache, s.ckpt
    return {
        "model": cfg.model.name,
        "arch": cfg.model.arch,
        "judged_as": s.judged,  # the family whose MLPerf target applies (a module's: the one it ports)
        "checkpoint": {"path": str(ckpt.path), "member": ckpt.member, "sha256": ckpt.sha256},
        "image_size": inputs.image_size,
        "preprocess": {**inputs.settings.to_dict(), "cache": str(cache.folder)},
        "normalization": cfg.model.normalization,
        "backend": cfg.backend,
        "device": s.runtime.device,
        "runtime_version": s.runtime.version,  # the library that ran the model
        # what ran: the torch runtime's precision and the arithmetic read inside its forward; the other
        # runtimes run the model's float32 graph
        "precision": s.runtime.precision,
        "numerics": s.runtime.numerics,
        "transform": s.transform.to_dict() if s.transform is not None else None,
        "batch_size": s.batch_size,
        # folded by the harness (a user's module runs as it is: never); None: a runtime of the graph's own
        "fold_bn": s.runtime.folded,
        "cpu_fusion": s.runtime.cpu_fusion,
        "cuda_graphs": s.runtime.cuda_graphs,
        "threads": s.threads,
        "distributed": s.world.to_dict() if s.world.size > 1 else None,
        "dataset": {"root": str(inputs.dataset.root), "layout": inputs.dataset.layout,
                    "label_set": inputs.dataset.label_set,
                    "labels_from": inputs.dataset.labels_from,
                    "labels": str(inputs.dataset.labels_file) if inputs.dataset.labels_file else None,
                    "absent_validation_images": inputs.dataset.absent,
                    "limit": cfg.dataset.limit, "listed": len(inputs.dataset),
                    "on_error": cfg.dataset.on_error},
        "skipped": [{"file": inputs.dataset.names[i], "reason": reason}
                    for i, reason in sorted(cache.failed.items())],
        "conversion": s.source.conversion,
        "versions": library_versions(),
        "git": git_commit(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def results_dict(cfg: DictConfig, s, result, reference, elapsed: float, against_exact: dict | None = None) -> dict:
    """The results JSON of an accuracy run: its facts, scores, predictions and reference comparison."""
    predictions = [None] * len(s.inputs.dataset)  # None: skipped as unreadable
    for i, p in zip(s.readable.tolist(), result.predictions.tolist()):
        predictions[i] = p
    calls = result.calls(s.readable.tolist(), len(s.inputs.dataset))
    results = stamped({
        **run_facts(cfg, s),
        "top1": result.top1,
        "top5": result.top5,
        "good": result.good,
        "top5_good": result.top5_good,
        "total": result.total,
        "accuracy_line": result.mlperf_line(),
        "mlperf_target": target.to_dict() if (target := gate(s.judged, result.top1, result.total,
                                                             s.reservations)) else None,
        "predictions": predictions,
        "images": s.inputs.dataset.names,  # the file of each prediction
        "ground_truth": [int(x) for x in s.inputs.dataset.labels],  # its label
        # each image's five best classes, their probabilities and the label's (how close each call was)
        "calls": calls,
        "real": real.score(s.inputs.dataset.names, calls["top5"]) if real.asked(cfg) else None,  # labels.real
        "reference": reference,
        "against_exact": against_exact,  # precision= other than fp32, model.transform=: against exact fp32
        "calibration": s.calibration,
        "timing": s.timing,  # seconds per stage; the evaluation's images/s after its first batch
        "elapsed_s": round(elapsed, 3),
    }, "accuracy")
    return {**results, "metrics": measured(results)}  # every metric (evaluation/metrics.py), by name


def write_results(results: dict, cfg: DictConfig, default: Path | None = None) -> Path:
    if cfg.results_file:
        path = Path(cfg.results_file).expanduser()
    elif default is not None:
        path = default
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")  # sweep jobs can share a second and a pid
        path = Path("results/runs") / (f"{cfg.model.name}-{cfg.preprocess.name}-{cfg.backend}-"
                                       f"{stamp}-{os.getpid()}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, to_json(results))
    return path


def _scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def to_json(value, depth: int = 0) -> str:
    """JSON indented by one space per level as `json.dumps(indent=1)`, but an image's short list (its
    five classes, their probabilities) on one line: a results file holds one per image."""
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k))}: {to_json(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)) and value:
        if len(value) <= 8 and all(_scalar(v) for v in value):
            return json.dumps(value, separators=(", ", ": "))
        return "[\n" + ",\n".join(inner + to_json(v, depth + 1) for v in value) + f"\n{pad}]"
    return json.dumps(value)
