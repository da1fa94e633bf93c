"""Preprocessing stage: labels list, MLPerf's pipeline and the memory-mapped crop cache."""
