"""A Keras model file (`.keras`, or the legacy `.h5` Keras 2 wrote) or a TF SavedModel folder, frozen
by TensorFlow itself into a GraphDef: its variables made constants, its functions inlined, the
inference graph (batch norms with their moving statistics, no dropout) fed NHWC float32 images."""

from __future__ import annotations

from pathlib import Path

from benchmark.formats.frozen_graph import GraphError


def _frozen(concrete) -> bytes:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(concrete).graph.as_graph_def().SerializeToString()


def freeze_keras(path: Path | str, image_size: int | None = None) -> bytes:
    """The Keras model at `path` as a frozen GraphDef's bytes, fed [N, size, size, 3] (`image_size`,
    else the model's own input size)."""
    from preprocessing.tf_import import import_tensorflow

    tf = import_tensorflow()
    import keras

    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as e:  # Keras raises many kinds for a file it cannot read  # noqa: BLE001
        raise GraphError(f"{path}: not a Keras model Keras can load ({type(e).__name__}: {e})") from e
    shape = list(model.inputs[0].shape) if getattr(model, "inputs", None) else [None, None, None, 3]
    if len(shape) != 4 or shape[3] != 3:
        raise GraphError(f"{path}: input shape {shape} is not NHWC RGB [N, H, W, 3]")
    size = image_size or shape[1]
    if size is None:
        raise GraphError(f"{path}: the model takes any image size: give model.image_size=")
    fn = tf.function(lambda x: model(x, training=False))
    return _frozen(fn.get_concrete_function(tf.TensorSpec([None, size, size, 3], tf.float32)))


def is_keras(path: Path | str) -> bool:
    """A Keras model file, or a SavedModel folder: what TensorFlow freezes before conversion."""
    path = Path(path).expanduser()
    return path.suffix in (".keras", ".h5") or (path.is_dir() and (path / "saved_model.pb").is_file())


def open_keras(path: Path | str, image_size: int | None = None):
    """A Keras model file or a SavedModel folder as a Checkpoint whose graph is the frozen GraphDef;
    its sha256 is the file's (a folder's: of its files' names and digests)."""
    import hashlib

    from benchmark.formats.checkpoint import Checkpoint, CheckpointError, file_digest

    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256("".join(f"{p.relative_to(path)}\0{file_digest(p)}\n" for p in files).encode())
        return Checkpoint(path, digest.hexdigest(), None, freeze_saved_model(path))
    return Checkpoint(path, file_digest(path), None, freeze_keras(path, image_size))


def freeze_saved_model(path: Path | str, signature: str = "serving_default") -> bytes:
    """The TF SavedModel folder at `path` (its `signature`) as a frozen GraphDef's bytes."""
    from preprocessing.tf_import import import_tensorflow

    tf = import_tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError) as e:
        raise GraphError(f"{path}: not a SavedModel TensorFlow can load ({e})") from e
    if signature not in loaded.signatures:
        raise GraphError(f"{path}: no signature {signature!r} (it has {', '.join(loaded.signatures) or 'none'})")
    return _frozen(loaded.signatures[signature])
