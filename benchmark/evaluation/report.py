"""Reporting stage: MLPerf's accuracy line and the results JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmark.evaluation import real
from benchmark.evaluation.metrics import measured
from benchmark.evaluation.results import Comparison, RunFacts, Scores, Verdict, stamped
from benchmark.evaluation.scoring import NUM_CLASSES
from benchmark.evaluation.significance import paired
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


def compare(against: str, other: dict, result, ref, logits: np.ndarray, ref_logits: np.ndarray, labels,
            names: list[str], calls: dict, gate: Verdict | None = None, timing: dict | None = None) -> Comparison:
    """The run (`result`, `logits`) against another model (`ref`, `ref_logits`) on the same images
    (`labels`, `names`), image by image: agreement of their top-1, the images the run fixes and
    breaks (McNemar's p), the other's margin on each disagreement, and the largest logit difference
    (over the 1000 classes where one has MLPerf's background output at index 0 and the other not).
    `against`: "reference" or "exact"; `other`: what the other model ran; `calls`: its calls, as a
    results file records them; `gate`: MLPerf's target for it; `timing`: its evaluation's."""
    if logits.shape[1] != ref_logits.shape[1]:
        logits, ref_logits = logits[:, -NUM_CLASSES:], ref_logits[:, -NUM_CLASSES:]
    same = result.predictions == ref.predictions
    differ = np.flatnonzero(~same)
    top2 = np.sort(ref_logits[differ], axis=1)[:, -2:]
    margins, tie = top2[:, 1] - top2[:, 0], near_tie_margin(ref_logits)
    flips = paired(labels, ref.predictions, result.predictions, names)
    return Comparison(
        against=against, other=other, scores=Scores.of(ref), calls=calls, agreement=int(same.sum()),
        disagreements=[names[i] for i in differ], fixed=flips["fixed"], broken=flips["broken"],
        fixed_images=flips["fixed_images"], broken_images=flips["broken_images"], mcnemar_p=flips["mcnemar_p"],
        # The other's top-1 minus its runner-up on each. Logits that differ by at most d can change
        # the top-1 only where that margin is at most 2d; a margin within numerical noise
        # (near_tie_margin) is a near-tie that any correct computation may break either way.
        disagreement_margins=margins.tolist(), near_tie_margin=tie, near_ties=int((margins <= tie).sum()),
        max_abs_logit_diff=float(np.abs(logits.astype(np.float64) - ref_logits).max()),
        logit_range=float(ref_logits.max() - ref_logits.min()), gate=gate,
        images_per_s=(timing or {}).get("eval_images_per_s"), timing=timing)


def facts_dict(facts: RunFacts) -> dict:
    """The facts as a results file has them: with the library versions, the harness's commit and the time."""
    return {**{f.name: getattr(facts, f.name) for f in fields(facts) if f.name != "config"},
            "versions": library_versions(), "git": git_commit(), "config": facts.config,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def results_dict(facts: RunFacts, result, images: list[str], labels: list[int], readable: list[int],
                 target, real_scored: bool, reference: Comparison | None, elapsed: float,
                 against_exact: Comparison | None = None, calibration: dict | None = None,
                 timing: dict | None = None) -> dict:
    """The results JSON of an accuracy run: its facts, scores (`result`: scoring.Score of the images
    at `readable` among the listed `images`), MLPerf's target (`target`: gate.Gate or None),
    predictions and comparisons; ImageNet-ReaL's scores where `real_scored` (labels.real=true)."""
    predictions = [None] * len(images)  # None: skipped as unreadable
    for i, p in zip(readable, result.predictions.tolist()):
        predictions[i] = p
    calls = result.calls(readable, len(images))
    results = stamped({
        **facts_dict(facts),
        **Scores.of(result).to_dict(),
        "accuracy_line": result.mlperf_line(),
        "mlperf_target": target.to_dict() if target else None,
        "predictions": predictions,
        "images": list(images),  # the file of each prediction
        "ground_truth": [int(x) for x in labels],  # its label
        # each image's five best classes, their probabilities and the label's (how close each call was)
        "calls": calls,
        "real": real.score(list(images), calls["top5"]) if real_scored else None,  # labels.real
        "reference": reference.to_dict() if reference else None,
        # precision= other than fp32, model.transform=: against the exact fp32 model
        "against_exact": against_exact.to_dict() if against_exact else None,
        "calibration": calibration,
        "timing": timing,  # seconds per stage; the evaluation's images/s after its first batch
        "elapsed_s": round(elapsed, 3),
    }, "accuracy")
    return {**results, "metrics": measured(results)}  # every metric (evaluation/metrics.py), by name


def default_results_path(model: str, pipeline: str, backend: str) -> Path:
    """results/runs/<model>-<pipeline>-<backend>-<time>-<pid>.json."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")  # sweep jobs can share a second and a pid
    return Path("results/runs") / f"{model}-{pipeline}-{backend}-{stamp}-{os.getpid()}.json"


def write_results(results: dict, path: Path) -> Path:
    path = Path(path).expanduser()
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
