"""PyTorch models that compute what MLPerf's TF graphs compute."""
