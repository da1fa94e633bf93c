"""The harness as MLPerf's LoadGen runs it: `python -m benchmark.loadgen` (see run.py)."""
