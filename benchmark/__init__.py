"""MLPerf-exact ImageNet accuracy harness: TF frozen graphs run in PyTorch, checked against TF."""

# torchvision crashes the process (segmentation fault) when it is imported after TensorFlow
# (torchvision 0.29 with TensorFlow 2.21); imported first, both work. Every entry point imports
# this package before TensorFlow.
import torchvision  # noqa: F401
