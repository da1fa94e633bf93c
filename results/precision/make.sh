#!/usr/bin/env bash
# Regenerates results/precision/: exact fp32, bf16 (CPU) and int8 runs of the real TF-slim MobileNet-v1
# 0.25/224 graph on the 1,000 sample images, and of a ResNet-50 of MLPerf's structure (random weights)
# on their first 200, each non-fp32 run compared image by image with exact fp32; then the tables and the
# HTML report (made before the crop caches it reads are deleted).
# Usage: results/precision/make.sh [SHARED_DATA]   (default ../shared/data), from the repository root.
set -euo pipefail
data=${1:-../shared/data}
out=results/precision
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$out"/runs/*.json "$out"/report
samples=$data/imagenet-samples
graph=$data/models/tf-slim-frozen-2017/mobilenet_v1_0.25_224/frozen_graph.pb

# The samples are one image per class, not MLPerf's calibration images: int8 is calibrated on a list
# of 500 of them (every other one), a file of names, which the results record as not an MLPerf list.
awk 'NR % 2 == 0 {print $1}' "$samples/val_map.txt" > "$work/calibration.txt"
python -c "
import sys; from pathlib import Path
from benchmark.bench.evaluation import fixture_graph
from preprocessing.dataset import load_dataset
print(fixture_graph('resnet50', load_dataset(sys.argv[1], layout='val_map'), Path(sys.argv[2])))" "$samples" "$work"

common=(dataset.root="$samples" cache_dir="$work/cache" progress=false threads=2)
for precision in fp32 bf16 int8; do
  python -m benchmark model=mobilenet_v1 model.checkpoint="$graph" "${common[@]}" precision=$precision \
    calibration.list="$work/calibration.txt" results_file="$out/runs/mobilenet_v1_0.25_224-$precision.json"
  python -m benchmark model=resnet50 model.checkpoint="$work/resnet50_fixture.pb" "${common[@]}" \
    dataset.limit=200 precision=$precision calibration.list="$work/calibration.txt" calibration.min_images=500 \
    results_file="$out/runs/resnet50_fixture-$precision.json"
done
python -m benchmark.table "$out"/runs/*.json --out "$out" --backend all --html \
  --title "Exact fp32, bf16 and int8 (CPU) on the sample images"
# The report's MobileNet page in headless Chromium (the browser test's code): checked, and its screenshot kept.
python -m benchmark.testing.browser "$out"/report/mobilenet_v1-frozen_graph.pb-224px.html \
  --screenshot "$out"/report/screenshot.png
