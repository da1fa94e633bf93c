"""python -m benchmark.submission: an MLPerf submission folder that MLPerf's own checker reads, from
the runs it needs (make.py), in the checker's layout (package.py), with the system described
(system.py)."""
