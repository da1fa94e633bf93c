"""Keras' ImageNet classifiers with random weights at a trained model's scale, for the tests and the
bench of `model=graph` (TF builds them here; no weights are downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ARCHITECTURES = ("MobileNetV2", "EfficientNetB0", "InceptionV3", "ResNet50V2", "DenseNet121")
# the input normalisation each expects (model.normalization): EfficientNet normalises its own input
NORMALIZATION = {"EfficientNetB0": "none"}


def keras_classifier(name: str, size: int, folder: Path | str, seed: int = 0) -> Path:
    """keras.applications' `name` with random weights, its batch norms' statistics randomised too (a
    fresh model's are the identity) and its classifier scaled to a trained model's logits (a range of
    about 20, not a random model's near-zero ones), saved as `<folder>/<name>-<size>.keras`."""
    from preprocessing.tf_import import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)  # the initial weights too: the same model at every call
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
    rng = np.random.default_rng(seed)
    draw = {"gamma": lambda s: rng.uniform(0.5, 1.5, s), "beta": lambda s: rng.normal(0, 0.1, s),
            "mean": lambda s: rng.normal(0, 0.5, s), "var": lambda s: rng.uniform(0.5, 2.0, s)}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            kinds = [k for k, on in (("gamma", layer.scale), ("beta", layer.center), ("mean", True), ("var", True)) if on]
            layer.set_weights([draw[k](w.shape).astype(np.float32) for k, w in zip(kinds, layer.get_weights())])
    head = model.layers[-1]
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 8.0, bias])
    path = Path(folder) / f"{name}-{size}.keras"
    model.save(path)
    return path
