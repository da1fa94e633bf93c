"""The report's pages: per model, every run's accuracy (and ReaL's where scored), each run against
its baseline with the paired difference, its 95 % confidence interval and McNemar's p, drawn as
intervals around zero; then per pair the flipped images (the crops each model saw, the original on
click), closest calls first, and the classes that gained or lost most; for a run with a reference,
the images where the two disagree. One HTML file per model, its images in a folder beside it; no
script and nothing fetched from elsewhere, so a page opens from disk."""

from __future__ import annotations

import math
import re
import shutil
from html import escape
from pathlib import Path

from benchmark.evaluation.metrics import METRICS
from benchmark.evaluation.pairs import NEAR_TIE, Pair, model_key, model_names, pair_runs, run_label
from benchmark.evaluation.results import Results
from benchmark.html.thumbnails import Crops, original_name, original_source, write_original
from preprocessing.dataset import shipped

MAX_FLIPS = 200  # thumbnails per pair, closest calls first; the page says how many more there are
CLASSES_SHOWN = 10
CLASS_COLUMNS = ["class", "label", "fixed", "broken", "net"]
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1b1b1b; max-width: 1400px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { background: #fff6d6; border-left: 4px solid #e0b000; padding: 6px 10px; margin: 8px 0; }
.classes { display: flex; gap: 32px; }
.flips { display: flex; flex-wrap: wrap; gap: 10px; }
figure.flip { margin: 0; width: 250px; border: 1px solid #ccc; border-radius: 4px; padding: 6px; }
figure.flip.near-tie { border: 2px solid #e07000; }
figure.flip img { width: 116px; height: 116px; image-rendering: auto; }
figure.flip .no-crop { display: inline-block; width: 116px; height: 116px; background: #eee; font-size: 11px; }
figcaption { font-size: 12px; }
.right { color: #17702a; } .wrong { color: #b3261e; }
.tie { background: #e07000; color: #fff; border-radius: 3px; padding: 0 4px; font-size: 11px; }
svg text { font: 12px system-ui, sans-serif; }
"""


def class_names() -> list[str]:
    """ILSVRC2012's class names (the first of each synset's names), by label."""
    return [line.split(" ", 1)[1].split(",")[0] for line in shipped("synsets.txt").read_text().splitlines()]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if j in numeric else ''}>{c}</td>" for j, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class Images:
    """The page's image folder: crops and originals written once each, and why any is missing."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.crops: dict[str, Crops] = {}
        self.written: dict[str, str | None] = {}  # file name -> None, or why it is not there
        self.notes: list[str] = []

    def crop(self, results: Results, i: int) -> str | None:
        """The crop the run of `results` saw of image i, as a file name relative to the page; None if gone."""
        path = results.path
        crops = self.crops.get(str(path))
        if crops is None:
            crops = self.crops[str(path)] = Crops(results)
            if crops.missing:
                self.notes.append(f"Crops of {path.name} not shown: {crops.missing}.")
        if crops.missing:
            return None
        name = f"crop-{crops.folder.name}-{i}.jpg"
        if name not in self.written:
            crops.write(i, self.folder / name)
            self.written[name] = None
        return f"{self.folder.name}/{name}"

    def original(self, results: Results, image: str) -> str | None:
        name = original_name(results, image)
        if name not in self.written:
            source, why = original_source(results)
            why = why or write_original(source, image, self.folder / name)
            self.written[name] = why
            if why:
                self.notes.append(f"Original of {image} not shown: {why}.")
        return None if self.written[name] else f"{self.folder.name}/{name}"


def forest(pairs: list[Pair]) -> str:
    """Each pair's difference and its 95 % interval on one axis around zero (an SVG; every mark
    carries its values, and the ticks their positions, so what is drawn can be read back)."""
    if not pairs:
        return ""
    reach = max(max(abs(v) for v in p.interval) for p in pairs)
    step = 10 ** math.floor(math.log10(reach)) if reach > 0 else 1.0
    step = next(s * step for s in (0.5, 1, 2, 5, 10) if reach / (s * step) <= 4)
    limit = step * math.ceil(reach / step)
    left, width, row = 440, 400, 26
    height = 58 + row * len(pairs)

    def x(v: float) -> float:
        return round(left + (v + limit) / (2 * limit) * width, 2)

    parts = [(f'<svg class="forest" xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" '
              f'height="{height}" role="img" aria-label="difference in top-1 with 95 % intervals">')]
    ticks = [round(-limit + k * step, 10) for k in range(round(2 * limit / step) + 1)]
    for t in ticks:
        parts.append(f'<g class="tick" data-value="{t:g}"><line x1="{x(t)}" x2="{x(t)}" y1="10" y2="{height - 40}" '
                     f'stroke="{"#555" if t == 0 else "#ddd"}"/><text x="{x(t)}" y="{height - 24}" '
                     f'text-anchor="middle">{t:+g}</text></g>')
    parts.append(f'<text x="{left + width / 2}" y="{height - 6}" text-anchor="middle">top-1 of the run minus its '
                 "baseline's, points (95 % interval)</text>")
    for k, p in enumerate(pairs):
        y = 24 + k * row
        low, high = p.interval
        color = "#17702a" if low > 0 else "#b3261e" if high < 0 else "#333"
        parts.append(
            f'<g class="pair" data-run="{escape(p.run.label)}" data-difference="{p.difference:.6f}" '
            f'data-low="{low:.6f}" data-high="{high:.6f}">'
            f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{escape(short(p.run.label))}</text>'
            f'<line class="interval" x1="{x(low)}" x2="{x(high)}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="2"/>'
            f'<circle cx="{x(p.difference)}" cy="{y}" r="4" fill="{color}"><title>{escape(p.run.label)}: '
            f'{p.difference:+.2f} points [{low:+.2f}, {high:+.2f}]</title></circle></g>')
    parts.append("</svg>")
    return "".join(parts)


def short(label: str, most: int = 64) -> str:
    return label if len(label) <= most else label[:most - 1] + "…"


def call_line(who: str, call: dict, label: int, names: list[str]) -> str:
    pred = call["prediction"]
    name = "background" if pred == -1 else names[pred]
    mark = "right" if pred == label else "wrong"
    prob = f" {call['prob']:.3f}" if "prob" in call else ""
    truth = f"; true label {call['label_prob']:.3f}" if "prob" in call and pred != label else ""
    return f'<div class="{mark}">{who}: {escape(name)}{prob}{truth}</div>'


def flip_figure(p: Pair, f: dict, names: list[str], images: Images) -> str:
    i = f["index"]
    original = images.original(p.run.results, f["image"])
    crops = []
    sides = [(p.baseline, "baseline")] + ([(p.run, "run")] if p.run.crops != p.baseline.crops else [])
    for s, who in sides:
        src = images.crop(s.results, i)
        img = (f'<img class="crop" src="{escape(src)}" alt="{escape(f["image"])}: the crop the {who} saw" '
               f'title="the crop the {who} saw">' if src else f'<span class="no-crop">{who}\'s crop not available</span>')
        crops.append(f'<a href="{escape(original)}">{img}</a>' if original and src else img)
    tie = ' <span class="tie">near-tie</span>' if f["near_tie"] else ""
    close = f"; closeness {f['closeness']:.3f}" if f["closeness"] is not None else ""
    return (f'<figure class="flip {f["kind"]}{" near-tie" if f["near_tie"] else ""}" data-image="{escape(f["image"])}" '
            f'data-index="{i}">{"".join(crops)}<figcaption><div><b>{f["kind"]}</b>{tie} {escape(f["image"])}</div>'
            f'<div>true: {escape(names[f["label"]])} ({f["label"]}){close}</div>'
            + call_line("baseline", f["baseline"], f["label"], names) + call_line("run", f["run"], f["label"], names)
            + "</figcaption></figure>")


def pair_section(k: int, p: Pair, names: list[str], images: Images, max_flips: int) -> str:
    flips = p.flips()
    c, (low, high) = p.comparison, p.interval
    shown = flips[:max_flips]
    more = f'<p class="note">Showing the {len(shown)} closest of {len(flips)} flips.</p>' if len(flips) > len(shown) else ""
    untimed = "" if all(f["closeness"] is not None for f in flips) else \
        '<p class="note">Probabilities not recorded for some flips (a results file written before runs recorded them).</p>'
    gained = [r for r in p.classes(flips) if r["net"] > 0][:CLASSES_SHOWN]
    lost = [r for r in p.classes(flips) if r["net"] < 0][:CLASSES_SHOWN]

    def class_rows(rows):
        return [[escape(names[r["label"]]), r["label"], r["fixed"], r["broken"], f"{r['net']:+d}"] for r in rows]
    return (f'<section class="pair-detail" id="pair-{k}"><h3>{escape(p.run.label)}<br><small>against '
            f'{escape(p.baseline.label)}</small></h3>'
            f"<p>{c['images']} images: {c['fixed']} fixed, {c['broken']} broken; difference {p.difference:+.2f} "
            f"points [{low:+.2f}, {high:+.2f}], McNemar p = {c['mcnemar_p']:.3g}. Near-ties (decided by less than "
            f"{NEAR_TIE:g} probability): {sum(f['near_tie'] for f in flips)}.</p>"
            + '<div class="classes">'
            + (f"<div><h4>Classes that gained most</h4>{table(CLASS_COLUMNS, class_rows(gained), {1, 2, 3, 4})}</div>"
               if gained else "")
            + (f"<div><h4>Classes that lost most</h4>{table(CLASS_COLUMNS, class_rows(lost), {1, 2, 3, 4})}</div>"
               if lost else "") + "</div>"
            + (f'<h4>Flipped images, closest calls first</h4>{more}{untimed}<div class="flips">'
               + "".join(flip_figure(p, f, names, images) for f in shown) + "</div>" if flips else
               "<p>No image flipped.</p>") + "</section>")


def reference_section(r: Results, names: list[str], images: Images) -> str:
    ref = r.reference
    if not ref:
        return ""
    index = {name: i for i, name in enumerate(r.images)}
    tie_margin = ref.near_tie_margin or 2e-4  # 2e-4: its least, for files written before it was recorded
    rows = []
    for name, margin in zip(ref.disagreements, ref.disagreement_margins):
        i = index[name]
        label, ours = r.ground_truth[i], r.predictions[i]
        theirs = ref.calls["top5"][i][0] if ref.calls else None
        src = images.crop(r, i)
        thumb = f'<img class="ref-crop" src="{escape(src)}" alt="{escape(name)}" width="64" height="64">' if src else ""
        tie = " (near-tie)" if margin <= tie_margin else ""
        rows.append([thumb, escape(name), escape(names[label]), escape(names[ours]) if ours != -1 else "background",
                     escape(names[theirs]) if theirs not in (None, -1) else str(theirs), f"{margin:.3g}{tie}"])
    return (f"<h3>{escape(run_label(r))} ({escape(r.path.name)}) against the reference "
            f"{escape(ref.other['backend'])}</h3>"
            f"<p>agreement {ref.agreement}/{r.scores.total}, largest logit difference {ref.max_abs_logit_diff:.3g}; "
            f"margin: the reference's top-1 logit minus its runner-up (a near-tie where it is under "
            f"{tie_margin:.2g}, within numerical noise: any correct computation may break it "
            "either way)</p>"
            + (table(["crop", "image", "true", "run", "reference", "margin"], rows) if rows else "<p>No disagreement.</p>"))


def accuracy_rows(runs: list[Results]) -> tuple[list[str], list[list]]:
    real = any(r.real for r in runs)
    # a column per metric (evaluation/metrics.py); one a run computes only when asked, where a run has it
    shown = [m for m in METRICS if m.asked_by is None or any(m.value(r) is not None for r in runs)]
    header = ["run", "file", "label set (layout)", "images", "good", *(m.title for m in shown)] + \
        (["ReaL images"] if real else []) + ["images/s"]
    rows = []
    for r in runs:
        d = r.facts.dataset or {}
        ips = (r.timing or {}).get("eval_images_per_s")
        row = [escape(run_label(r)), escape(r.path.name), escape(f"{d.get('label_set', '')} ({d.get('layout', '')})"),
               r.scores.total, r.scores.good, *(m.text(r) for m in shown)]
        if real:
            row.append((r.real or {}).get("total", "not scored"))
        rows.append(row + [f"{ips:.1f}" if ips else ""])
    return header, rows


def model_page(model: str, runs: list[Results], pairs: list[Pair], unpaired: list[str], title: str,
               folder: Path, max_flips: int) -> str:
    names = class_names()
    images = Images(folder)
    header, rows = accuracy_rows(runs)
    numeric = {i for i, h in enumerate(header) if h in ("images", "good", "ReaL top-1", "ReaL top-5", "ReaL images",
                                                          "images/s", *(m.title for m in METRICS))}
    pair_rows = [[f'<a href="#pair-{k}">{escape(p.run.label)}</a>', escape(p.baseline.label), p.images,
                  f"{100 * p.comparison['good_b'] / p.images:.3f}", f"{100 * p.comparison['good_a'] / p.images:.3f}",
                  f"{p.difference:+.2f}", f"[{p.interval[0]:+.2f}, {p.interval[1]:+.2f}]", p.comparison["fixed"],
                  p.comparison["broken"], f"{p.comparison['mcnemar_p']:.3g}"] for k, p in enumerate(pairs)]
    details = "".join(pair_section(k, p, names, images, max_flips) for k, p in enumerate(pairs))
    references = "".join(reference_section(r, names, images) for r in runs)
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in
                    [*unpaired, *images.notes])
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(model)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><h2>{escape(model)}</h2>"
            f"<h3>Accuracy per run</h3>{table(header, rows, numeric)}"
            + ("" if "ReaL top-1" in header else "<p>ImageNet-ReaL: not scored (a run scores it with labels.real=true, "
               "on ImageNet validation images only).</p>")
            + "<h3>Each run against its baseline on the same images</h3>"
            + (table(["run", "baseline", "images", "top-1 run", "top-1 baseline", "difference, points",
                      "95 % interval", "fixed", "broken", "McNemar p"], pair_rows, {2, 3, 4, 5, 7, 8, 9})
               + forest(pairs) if pairs else "<p>No two runs of this model on the same images.</p>")
            + "<p>Difference: the run's top-1 minus its baseline's on the images both read; 95 % interval: "
              "Agresti-Min's for a paired difference; p: the exact McNemar test on the flips.</p>"
            + notes + details + (f"<h2>Against a reference</h2>{references}" if references else "")
            + "</body></html>\n")


def write_report(runs: list[Results], out: Path, title: str, max_flips: int = MAX_FLIPS) -> list[Path]:
    """report/index.html and one page per model (with its image folder) under `out`."""
    report = out / "report"
    pairs, unpaired = pair_runs(runs)
    names = model_names(runs)
    models = sorted(set(names.values()))
    written, links = [], []
    for model in models:
        name = slug(model)
        folder = report / name
        if folder.exists():
            shutil.rmtree(folder)  # images of an earlier report: none may outlive it
        folder.mkdir(parents=True)
        mine = [r for r in runs if names[model_key(r)] == model]
        files = {r.path.name for r in mine}
        page = model_page(model, mine, [p for p in pairs if p.model == model],
                          [u for u in unpaired if u.split(":")[0].split(" ")[0] in files], title, folder, max_flips)
        (report / f"{name}.html").write_text(page)
        written.append(report / f"{name}.html")
        links.append(f'<li><a href="{escape(name)}.html">{escape(model)}</a>: {len(mine)} runs</li>')
    (report / "index.html").write_text(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
                                       f"{escape(title)}</title><style>{STYLE}</style></head><body><h1>"
                                       f"{escape(title)}</h1><ul>{''.join(links)}</ul></body></html>\n")
    return [report / "index.html", *written]
