#!/usr/bin/env bash
# Regenerates results/samples/: the real TF-slim MobileNet-v1 0.25 graphs (224 and 128, the 2017
# release archives) on the 1,000 sample images, by preprocessing pipeline, then the tables and the HTML
# report (its images are read from the crop caches, so it is made before they are deleted).
# Usage: results/samples/make.sh [SHARED_DATA]   (default ../shared/data), from the repository root.
set -euo pipefail
data=${1:-../shared/data}
out=results/samples
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$out"/runs/*.json "$out"/report
for size in 224 128; do
  graph=$data/models/tf-slim-frozen-2017/mobilenet_v1_0.25_${size}_frozen.tgz
  for variant in "mlperf" "mlperf preprocess.interpolation=area" "tf" "torchvision"; do
    set -- $variant
    name=$1${2:+-area}
    python -m benchmark model=mobilenet_v1 model.checkpoint="$graph" preprocess=$1 ${2:-} \
      dataset.root="$data/imagenet-samples" cache_dir="$work/cache" threads=1 progress=false \
      results_file="$out/runs/mobilenet_v1_0.25_$size-$name.json"
  done
done
python -m benchmark.table "$out"/runs/*.json --out "$out" --html \
  --title "MobileNet-v1 0.25 (TF-slim 2017) on the 1,000 sample images"
# The report's 224 px page in headless Chromium (the browser test's code): checked, and its screenshot kept.
python -m benchmark.testing.browser "$out"/report/mobilenet_v1-mobilenet_v1_0.25_224-frozen_graph.pb-224px.html \
  --screenshot "$out"/report/screenshot.png
