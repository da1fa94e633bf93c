"""Runs paired on the same images: which run is each run's baseline, the images it fixes and breaks,
how close each of those calls was, and which classes gained or lost; read by the tables and the
HTML report (benchmark.table). Also the labels that tell runs apart in both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmark.evaluation.results import Results
from benchmark.evaluation.significance import paired, paired_difference_ci
from benchmark.families import FAMILIES, mlperf_departures
from preprocessing.pipelines import mlperf_departures as pipeline_departures

NEAR_TIE = 0.05  # a call decided by less than this much probability (5 points) is a near-tie


def pipeline_label(p: dict) -> str:
    """A column name that tells pipelines apart: name, interpolation, and any unusual knob."""
    label = f"{p['name']} {p['interpolation']}"
    if p.get("resize") == "torchvision" and not p.get("antialias", True):
        label += ", no antialias"
    if p.get("crop_percent", 87.5) != 87.5:
        label += f", crop {p['crop_percent']:g}%"
    return label


def model_label(r: Results) -> str:
    ckpt = r.facts.checkpoint
    # An archive member's folder tells TF-slim's graphs apart (they are all frozen_graph.pb).
    name = ckpt["member"].removeprefix("./") if ckpt["member"] else Path(ckpt["path"]).name
    module = ((r.facts.conversion or {}).get("module") or {}).get("target")  # model=module: whose module
    return f"{r.facts.model}{f' {module}' if module else ''} ({name}, {r.facts.image_size}px)"


def model_key(r: Results) -> tuple:
    """What makes two runs' models one model: the checkpoint's bytes (sha256), its image size and, for
    model=module, the user's module; never its file name (every TF-slim graph is frozen_graph.pb)."""
    return model_label(r), r.facts.checkpoint.get("sha256") or r.facts.checkpoint["path"]


def model_names(runs: list[Results]) -> dict[tuple, str]:
    """Each model (model_key) of `runs` its label: the short one, with the checkpoint's first sha256
    digits where two models would share it."""
    keys = {model_key(r) for r in runs}
    shared = {label for label, _ in keys if sum(k[0] == label for k in keys) > 1}
    return {key: f"{key[0][:-1]}, sha256 {key[1][:12]})" if key[0] in shared else key[0] for key in keys}


def transform_of(r: Results) -> str | None:
    """A transformed run's transform, short: function(arguments) and the first digits of its source's
    sha256 (two versions of one transform are two runs); None for the exact model."""
    t = r.facts.transform
    if not t:
        return None
    args = ", ".join(f"{k}={v}" for k, v in sorted((t.get("kwargs") or {}).items()))
    digest = f" {t['source_sha256'][:8]}" if t.get("source_sha256") else ""
    return f"{t['target'].rsplit(':', 1)[-1]}({args}){digest}"


def variant(r: Results) -> str:
    """What a run changed from the exact model, as a label's tail: its precision, its transform."""
    precision = r.facts.precision
    return "".join(f", {v}" for v in (precision if precision != "fp32" else None, transform_of(r)) if v)


def run_label(r: Results) -> str:
    return f"{pipeline_label(r.facts.preprocess)}, {r.facts.backend}{variant(r)}"


def same_pipeline(a: Results, b: Results) -> bool:
    """Whether two runs cropped their images alike: every setting of the pipeline equal (the cache
    folder each read them from aside: two cache_dir= of one pipeline hold the same crops)."""
    def settings(r):
        return {k: v for k, v in r.facts.preprocess.items() if k != "cache"}
    return settings(a) == settings(b)


def is_exact(r: Results) -> bool:
    """A run of the exact model: fp32, no transform (a baseline may be nothing else)."""
    return r.facts.precision == "fp32" and not r.facts.transform


def is_mlperfs(r: Results) -> bool:
    """MLPerf's own run of its model: MLPerf's pipeline for the family it is judged as, every setting
    (not the config's name: families.mlperf_departures), exact (fp32, no transform), whichever
    runtime computed it (the tables pick one backend's runs: --backend). A model of no family the
    harness knows: the interpolation its config named MLPerf's, else its own."""
    arch, p = r.facts.judged, r.facts.preprocess
    if arch in FAMILIES and FAMILIES[arch].mlperf_interpolation:
        departs = mlperf_departures(arch, p)
    else:
        model = (r.facts.config or {}).get("model") or {}
        departs = pipeline_departures(p, model.get("mlperf_interpolation", p["interpolation"]))
    return not departs and is_exact(r)


@dataclass
class Side:
    """One side of a pair: a run's file, or the exact fp32 model a precision run was compared with
    inside its own file."""
    label: str
    path: Path
    results: Results
    predictions: list
    calls: dict | None  # top5, top5_prob, label_prob per image (None: a file written before they were)

    @property
    def crops(self) -> str | None:
        """The crop cache the side's model read (its run's, for the exact model inside a run too)."""
        return self.results.facts.preprocess.get("cache")

    def call(self, i: int) -> dict:
        """Image i's call: the prediction, and where recorded its probability, the runner-up's and the
        true label's."""
        out = {"prediction": self.predictions[i]}
        if self.calls and self.calls["top5"][i] is not None:
            probs = self.calls["top5_prob"][i]
            out.update(prob=probs[0], runner_up=self.calls["top5"][i][1], runner_up_prob=probs[1],
                       label_prob=self.calls["label_prob"][i])
        return out


@dataclass
class Pair:
    model: str
    run: Side
    baseline: Side
    labels: list[int]  # ground truth of every listed image
    names: list[str]
    both: list[int]  # the images read by both sides
    comparison: dict  # significance.paired: good_a (baseline), good_b (run), fixed, broken, mcnemar_p

    @property
    def images(self) -> int:
        return self.comparison["images"]

    @property
    def difference(self) -> float:
        """The run's top-1 minus the baseline's, in points."""
        return 100.0 * (self.comparison["fixed"] - self.comparison["broken"]) / self.images

    @property
    def interval(self) -> tuple[float, float]:
        """95 % confidence interval of the difference, in points."""
        low, high = paired_difference_ci(self.comparison["fixed"], self.comparison["broken"], self.images)
        return 100.0 * low, 100.0 * high

    def flips(self) -> list[dict]:
        """Each image the run fixes or breaks, with both calls, the closest first: a flip's closeness
        is the smaller of the wrong call's lead over the true label and the right call's lead over
        its runner-up (probability); None where the files hold no probabilities (sorted last)."""
        rows = []
        for i in self.both:
            a, b = self.baseline.predictions[i], self.run.predictions[i]
            if (a == self.labels[i]) == (b == self.labels[i]):
                continue
            base, run = self.baseline.call(i), self.run.call(i)
            right, wrong = (run, base) if b == self.labels[i] else (base, run)
            close = min(right["prob"] - right["runner_up_prob"], wrong["prob"] - wrong["label_prob"]) \
                if "prob" in base and "prob" in run else None
            rows.append({"index": i, "image": self.names[i], "label": self.labels[i],
                         "kind": "fixed" if b == self.labels[i] else "broken", "baseline": base, "run": run,
                         "closeness": close, "near_tie": close is not None and close < NEAR_TIE})
        return sorted(rows, key=lambda r: (r["closeness"] is None, r["closeness"] or 0.0, r["index"]))

    def classes(self, flips: list[dict] | None = None) -> list[dict]:
        """Per class with a flip: images fixed, broken and the net change, largest change first."""
        counts: dict[int, list[int]] = {}
        for f in flips if flips is not None else self.flips():
            counts.setdefault(f["label"], [0, 0])[f["kind"] == "broken"] += 1
        rows = [{"label": c, "fixed": f, "broken": b, "net": f - b} for c, (f, b) in counts.items()]
        return sorted(rows, key=lambda r: (-abs(r["net"]), -r["net"], r["label"]))


def side(r: Results) -> Side:
    return Side(f"{run_label(r)} ({r.path.name})", r.path, r, r.predictions, r.calls)


def exact_side(r: Results) -> Side | None:
    """The exact fp32 model a precision or transform run was compared with in its own file, where
    the file holds its calls."""
    calls = r.exact.calls if r.exact is not None else None
    if not calls:
        return None
    predictions = [c[0] if c is not None else None for c in calls["top5"]]
    return Side(f"exact fp32 of {r.path.name} (same run, same crops)", r.path, r, predictions, calls)


def pair_runs(runs: list[Results]) -> tuple[list[Pair], list[str]]:
    """Per model (its checkpoint's sha256, not its file name) and image list, every run against the
    baseline: an exact run (fp32, no transform), of MLPerf's pipeline (every setting: is_mlperfs) where
    there is one, else the first exact file by name. A precision or transform run is
    paired with the baseline where that read its crops (the same pipeline), else with the exact model
    inside its own file (the same crops); with neither, it is not paired. Images a side skipped are
    left out of its pair. Also the runs that could not be paired, and why: a run alone on its image
    list among other runs of its model is one of them."""
    names = model_names(runs)
    groups: dict = {}
    for r in sorted(runs, key=lambda r: r.path.name):
        groups.setdefault((names[model_key(r)], tuple(r.images)), []).append(r)
    lists: dict = {}  # model -> how many image lists its runs have
    for model, images in groups:
        lists[model] = lists.get(model, 0) + 1
    pairs, unpaired = [], []
    for (model, images), members in sorted(groups.items(), key=lambda g: g[0][0]):
        if len(members) == 1:  # alone on its image list: a variant run against its own exact side
            r = members[0]
            own = exact_side(r) if not is_exact(r) else None
            if own is not None and r.ground_truth:
                pairs.append(make_pair(model, side(r), own, r.ground_truth, list(images)))
            elif lists[model] > 1:  # the model's other runs read other images
                unpaired.append(f"{r.path.name}: no other run of {model} on the same {len(images)} images "
                                f"(a different image list, such as another dataset.limit)")
            continue
        exacts = [r for r in members if is_exact(r)]
        base = next((r for r in exacts if is_mlperfs(r)), exacts[0] if exacts else None)
        for r in members:
            if r is base:
                continue
            own = exact_side(r) if not is_exact(r) else None
            if base is not None and (own is None or same_pipeline(r, base)):
                labels = base.ground_truth
                baseline = side(base) if labels else Side("", base.path, base, [], None)
            elif own is not None:
                baseline, labels = own, r.ground_truth
            else:
                unpaired.append(f"{r.path.name}: no exact run (fp32, no transform) of {model} on these images, and "
                                f"its file holds no exact fp32 side")
                continue
            pair = make_pair(model, side(r), baseline, labels, list(images)) if labels else None
            if pair is None or not pair.both:
                why = "its results hold no ground_truth (written by an older version)" if not labels \
                    else "no image was read by both runs"
                unpaired.append(f"{r.path.name} against {baseline.path.name}: {why}")
                continue
            pairs.append(pair)
    return pairs, unpaired


def make_pair(model: str, run: Side, baseline: Side, labels: list[int], names: list[str]) -> Pair:
    both = [i for i, (x, y) in enumerate(zip(baseline.predictions, run.predictions)) if x is not None and y is not None]
    comparison = paired([labels[i] for i in both], [baseline.predictions[i] for i in both],
                        [run.predictions[i] for i in both]) if both else {}
    return Pair(model, run, baseline, labels, names, both, comparison)
