"""MLPerf-exact ImageNet accuracy harness: TF frozen graphs run in PyTorch, checked against TF.

Nothing heavy is imported here: each command imports what it runs (a cache build with the OpenCV
pipeline imports neither PyTorch nor TensorFlow). TensorFlow is imported through
`preprocessing.tf_import`, after torchvision."""
