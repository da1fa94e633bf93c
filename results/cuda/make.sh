#!/usr/bin/env bash
# Regenerates results/cuda/ on a machine with an NVIDIA GPU: the CUDA tests (CUDA graphs against the
# eager model bit for bit, the overlapped loop) and the CUDA report of `python -m benchmark.bench.cuda`
# (CUDA against the CPU image by image; the evaluation loop's variants, each against the default;
# one pass over 50,000 images from a memory-mapped cache; a profile of a few batches).
# TensorFlow is not needed: the models are MLPerf's two structures with random weights (timing only),
# plus any `python -m benchmark.export` files named in MODELS (ARCH=PATH.safetensors ...).
# The images are JPEGs with a val_map.txt: DATASET, or ../shared/data's samples, or synthetic ones.
# Python needs torch with CUDA, numpy, opencv-python-headless, tqdm, safetensors, omegaconf and pytest
# (on a machine without a package index, carry the wheels of what is missing: omegaconf, antlr4).
# Usage: results/cuda/make.sh [OUT_DIR]    (about 5 minutes on an H100/H200; needs ~10 GB free in TMPDIR)
set -euo pipefail
out=${1:-results/cuda}
mkdir -p "$out"
py=${PYTHON:-python3}
data=${DATASET:-../shared/data/imagenet-samples}
if [ ! -f "$data/val_map.txt" ]; then
  data=$(mktemp -d)/val
  "$py" -c "import sys; from pathlib import Path; from tests.helpers import validation_images, write_layout; write_layout(Path(sys.argv[1]), 'val_map', validation_images(200))" "$data"
fi
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
"$py" -m pytest -p no:cacheprovider -m cuda -q -rs tests/benchmark/nn/test_cuda_graph.py 2>&1 | tee "$out/tests.log"
PYTHONUNBUFFERED=1 "$py" -m benchmark.bench.cuda --dataset "$data" --images 200 \
  --model mobilenet_v1=random --model resnet50=random ${MODELS:+$(printf -- '--model %s ' $MODELS)} \
  --timed-images 10000 --full-images 50000 --repeats 3 --out "$out/bench.md"
