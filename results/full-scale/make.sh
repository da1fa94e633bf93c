#!/usr/bin/env bash
# Regenerates results/full-scale/: one 50,000-image run end to end, as a user runs it from
# ILSVRC2012_img_val.tar: the archive read in place, the crop cache built, the real MobileNet-v1
# 0.25/224 graph evaluated. ImageNet cannot be downloaded here, so the archive holds the 1,000 real
# sample JPEGs (full size, ImageNet's own files) again and again under the 50,000 validation names:
# the sizes and decoding work of ImageNet's images, not its labels (the top-1 is meaningless).
# Usage: results/full-scale/make.sh [SHARED_DATA] [WORK_DIR]   (needs about 6 GB free in WORK_DIR)
set -euo pipefail
data=${1:-../shared/data}
work=${2:-$(mktemp -d)}
out=results/full-scale
mkdir -p "$work"
python - "$data/imagenet-samples" "$work/ILSVRC2012_img_val.tar" <<'PY'
import sys, tarfile
from pathlib import Path
samples = sorted(Path(sys.argv[1]).glob("*.JPEG"))
with tarfile.open(sys.argv[2], "w") as tar:
    for k in range(50_000):
        tar.add(samples[k % len(samples)], arcname=f"ILSVRC2012_val_{k + 1:08d}.JPEG")
PY
ls -l "$work/ILSVRC2012_img_val.tar"
/usr/bin/time -v -o "$work/time.txt" python -m benchmark model=mobilenet_v1 \
  model.checkpoint="$data/models/tf-slim-frozen-2017/mobilenet_v1_0.25_224/frozen_graph.pb" \
  dataset.root="$work/ILSVRC2012_img_val.tar" cache_dir="$work/cache" progress=false \
  results_file="$work/run.json"
python - "$work/run.json" "$work/time.txt" "$out/README.md" <<'PY'
import json, platform, sys
from pathlib import Path
r = json.loads(Path(sys.argv[1]).read_text())
t = dict(line.strip().split(": ", 1) for line in Path(sys.argv[2]).read_text().splitlines() if ": " in line)
timing, n = r["timing"], r["total"]
lines = [
    "# 50,000 images end to end (written by results/full-scale/make.sh)", "",
    f"- date: {r['created']}; machine: {platform.processor() or platform.machine()}, "
    f"{r['threads']} torch threads; versions: torch {r['versions']['torch']}, opencv {r['versions']['opencv']}",
    f"- input: an ILSVRC2012_img_val.tar of {n:,} full-size JPEGs (ImageNet's own sample files repeated "
    "under the validation names), read in place", "",
    "| stage | seconds | images/s |", "|---|---|---|",
    f"| checkpoint (read the frozen graph) | {timing['checkpoint_s']:.1f} | |",
    f"| conversion to PyTorch | {timing['convert_s'] or 0:.1f} | |",
    f"| crop cache build from the archive (MLPerf's pipeline) | {timing['cache_s']:.1f} | {n / timing['cache_s']:.0f} |",
    f"| evaluation (torch, batch {r['batch_size']}) | {timing['eval_s']:.1f} | {timing['eval_images_per_s']:.0f} (after the first batch) |",
    f"| the whole command (process wall time) | {t['Elapsed (wall clock) time (h:mm:ss or m:ss)']} | |", "",
    f"Peak resident memory of the process: {int(t['Maximum resident set size (kbytes)']) / 2**20:.2f} GB.",
    f"Cache on disk: {n * 224 * 224 * 3 / 1e9:.1f} GB (uint8).", "",
    f"`{r['accuracy_line']}` (not ImageNet accuracy: the labels are the validation set's, the images are not).",
]
Path(sys.argv[3]).write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
