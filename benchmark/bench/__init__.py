"""python -m benchmark.bench: images/s of every runtime on the same crops, with ratios against the peers."""
