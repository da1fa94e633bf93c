"""python -m benchmark.table [RESULTS.json ...] --out DIR

Collects results JSON files (default: results/runs/*.json) into tables: `runs.md`/`runs.csv`, one
row per run; `pivot.md`/`pivot.csv`, models x preprocessing pipelines, top-1 with good/total;
`paired.md`, each run against its model's baseline run on the same images (MLPerf's pipeline where
there is one): the images it fixes and breaks, the exact McNemar p-value and the difference's 95 %
confidence interval, so a table says whether a difference is noise; and a bar chart of top-1 per
pipeline per model (`top1.png` and `top1.svg`). ImageNet-ReaL's scores where a run has them
(labels.real=true). With --html, the report: `report/index.html` and a page per model, its images
in a folder beside it (benchmark/html/).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from benchmark.evaluation.metrics import METRICS
from benchmark.evaluation.pairs import model_key, model_names, pair_runs, pipeline_label, variant
from benchmark.evaluation.results import Results, ResultsError, read_results
from preprocessing.errors import UserError

# a column per metric (evaluation/metrics.py: a new metric is a new column)
COLUMNS = ["model", "checkpoint", "image_size", "pipeline", "decoder", "resize", "interpolation",
           "antialias", "crop_percent", "crop_rounding", "precision", "backend", "device", *(m.name for m in METRICS),
           "good", "total", "label_set", "real_total", "images_per_s", "opencv", "pillow", "torch", "file"]


class TableError(UserError, ValueError):
    pass


def row(r: Results, model: str) -> dict:
    """`model`: the run's model label (pairs.model_names)."""
    f, p, versions = r.facts, r.facts.preprocess, r.versions
    return {
        "model": model, "checkpoint": f.checkpoint["sha256"][:12], "image_size": f.image_size,
        "pipeline": pipeline_label(p) + variant(r),
        "precision": f.precision, "decoder": p.get("decoder", "opencv"), "resize": p.get("resize", "opencv"),
        "interpolation": p["interpolation"], "antialias": p.get("antialias", True),
        "crop_percent": p.get("crop_percent", 87.5), "crop_rounding": p.get("crop_rounding", "floor"),
        "backend": f.backend, "device": f.device, **{m.name: m.text(r) for m in METRICS},
        "good": r.scores.good, "total": r.scores.total,
        # ImageNet-ReaL (labels.real=true): the images it scored, empty where the run was not scored against it
        "label_set": (f.dataset or {}).get("label_set", ""),
        "real_total": (r.real or {}).get("total", ""),
        "images_per_s": f"{ips:.1f}" if (ips := (r.timing or {}).get("eval_images_per_s")) else "",
        "opencv": versions.get("opencv"), "pillow": versions.get("pillow"), "torch": versions.get("torch"),
        "file": r.path.name,
    }


def load(paths: list[Path]) -> list[Results]:
    runs = []
    for path in paths:
        try:
            runs.append(read_results(path, command="benchmark.table"))
        except ResultsError as e:
            raise TableError(str(e)) from e
    if not runs:
        raise TableError("no results files given or found")
    return runs


def pivot(rows: list[dict]) -> tuple[list[str], list[str], dict]:
    """models x pipelines -> cell; two runs for one cell is an error, not a silent pick."""
    models = sorted({r["model"] for r in rows})
    pipelines = sorted({r["pipeline"] for r in rows})
    cells: dict = {}
    for r in rows:
        key = (r["model"], r["pipeline"])
        if key in cells:
            raise TableError(f"two runs for {key[0]} / {key[1]}: {cells[key]['file']} and {r['file']}; "
                             "pass only one (or use --backend)")
        cells[key] = r
    return models, pipelines, cells


def markdown(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in line) + " |" for line in body]
    return "\n".join(lines) + "\n"


def write_tables(runs: list[Results], out: Path, backend: str | None, title: str) -> list[Path]:
    names = model_names(runs)
    rows = [row(r, names[model_key(r)]) for r in runs if backend is None or r.facts.backend == backend]
    if not rows:
        raise TableError(f"no runs with backend={backend}")
    rows.sort(key=lambda r: (r["model"], r["pipeline"], r["backend"]))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "runs.md").write_text(f"# {title}: all runs\n\n" + markdown(COLUMNS, [[r[c] for c in COLUMNS] for r in rows]))
    models, pipelines, cells = pivot(rows)

    def cell(m, p):
        r = cells.get((m, p))
        real = f"; ReaL {r['real_top1']}" if r and r["real_top1"] else ""
        return f"{r['top1']} ({r['good']}/{r['total']}{real})" if r else ""
    body = [[m] + [cell(m, p) for p in pipelines] for m in models]
    (out / "pivot.md").write_text(f"# {title}: top-1 % (good/total)\n\n" + markdown(["model"] + pipelines, body))
    with open(out / "pivot.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model"] + pipelines)
        writer.writerows(body)
    pairs, unpaired = paired_table([r for r in runs if backend is None or r.facts.backend == backend])
    (out / "paired.md").write_text(f"# {title}: each run against its model's baseline on the same images\n\n"
                                   + markdown(PAIRED_COLUMNS, pairs)
                                   + "\nfixed / broken: images the run gets right and the baseline wrong, and the "
                                     "other way; p: exact McNemar test on those flips (small p: unlikely to be "
                                     "noise); difference: the run's top-1 minus the baseline's, with its 95 % "
                                     "confidence interval (Agresti-Min, paired).\n" + "".join(f"\nNot paired: {why}\n" for why in unpaired))
    for why in unpaired:
        print(f"paired.md: not paired: {why}", file=sys.stderr)
    charts = chart(models, pipelines, cells, out / "top1", title)
    return [out / "runs.csv", out / "runs.md", out / "pivot.md", out / "pivot.csv", out / "paired.md", *charts]


PAIRED_COLUMNS = ["model", "run", "baseline", "images", "top-1 run", "top-1 baseline", "fixed", "broken",
                  "McNemar p", "difference [95 % CI], points"]


def paired_table(runs: list[Results]) -> tuple[list[list], list[str]]:
    """paired.md's rows (evaluation/pairs.py pairs the runs), and the runs that could not be paired."""
    pairs, unpaired = pair_runs(runs)
    body = []
    for p in pairs:
        c, (low, high) = p.comparison, p.interval
        body.append([p.model, p.run.label, p.baseline.label, c["images"], f"{100 * c['good_b'] / c['images']:.3f}",
                     f"{100 * c['good_a'] / c['images']:.3f}", c["fixed"], c["broken"], f"{c['mcnemar_p']:.3g}",
                     f"{p.difference:+.2f} [{low:+.2f}, {high:+.2f}]"])
    return body, unpaired


def chart(models, pipelines, cells, stem: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(models) * len(pipelines)), 4.5))
    width = 0.8 / len(pipelines)
    for j, p in enumerate(pipelines):
        xs = [i + (j - (len(pipelines) - 1) / 2) * width for i in range(len(models))]
        ys = [float(cells[(m, p)]["top1"]) if (m, p) in cells else 0.0 for m in models]
        bars = ax.bar(xs, ys, width, label=p)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(models)), [m.replace(" (", "\n(") for m in models], fontsize=8)
    ax.set_ylabel("top-1 %")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, **({"metadata": {"Date": None}} if path.suffix == ".svg" else {}))
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.table", description=__doc__.split("\n\n")[1])
    parser.add_argument("results", nargs="*", type=Path, help="results JSON files (default: results/runs/*.json)")
    parser.add_argument("--out", type=Path, default=Path("results/tables"), help="folder for the tables")
    parser.add_argument("--backend", default="torch", help="runs of this backend only (default torch; 'all')")
    parser.add_argument("--title", default="ImageNet top-1 by preprocessing pipeline")
    parser.add_argument("--html", action="store_true",
                        help="also the HTML report: report/index.html and one page per model under --out")
    parser.add_argument("--html-flips", type=int, default=None, metavar="N",
                        help="flipped images shown per pair, closest calls first (default 200)")
    args = parser.parse_args(argv)
    paths = args.results or sorted(Path("results/runs").glob("*.json"))
    try:
        runs = load(paths)
        written = write_tables(runs, args.out, None if args.backend == "all" else args.backend, args.title)
        if args.html:
            from benchmark.html.pages import MAX_FLIPS, write_report

            chosen = [r for r in runs if args.backend == "all" or r.facts.backend == args.backend]
            written += write_report(chosen, args.out, args.title, args.html_flips or MAX_FLIPS)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
