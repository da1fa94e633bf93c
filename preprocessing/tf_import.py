"""TensorFlow, imported the one way that is safe beside PyTorch."""

from __future__ import annotations

import importlib.util


def import_tensorflow():
    """The `tensorflow` module, with torchvision imported first where it is installed: torchvision
    0.29 crashes the process (segmentation fault) when it is imported after TensorFlow 2.21;
    imported first, both work. Every TensorFlow import of the package goes through here, so that
    a command needing neither (a cache build with the OpenCV pipeline) imports neither."""
    if importlib.util.find_spec("torchvision") is not None:
        import torchvision  # noqa: F401
    import tensorflow

    return tensorflow
