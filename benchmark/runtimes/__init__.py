"""Runtimes: what turns a batch of cached crops into logits. One module per runtime behind one small
protocol, and one factory, `create`, that every command uses (`python -m benchmark` for its backend
and its reference, LoadGen's system under test, compare, the bench).

Adding a runtime (or a precision of one) is one module with a `create(source, options)` function
plus one entry in RUNTIMES.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from preprocessing.errors import ConfigError

# backend / reference name in the config -> the module that makes that runtime
RUNTIMES = {
    "torch": "benchmark.runtimes.pytorch",
    "tf": "benchmark.runtimes.tf",
    "onnxruntime": "benchmark.runtimes.ort",
    "openvino": "benchmark.runtimes.openvino",
}
# Each runtime's library, as a person names it (a submission's `framework`), and its key in the
# results' library versions where it has one.
LIBRARIES = {"torch": ("PyTorch", "torch"), "tf": ("TensorFlow", "tensorflow"), "onnxruntime": ("ONNX Runtime", None),
             "openvino": ("OpenVINO", None)}


def framework(name: str, version: str | None) -> str:
    """The library that ran the model, with its version: 'TensorFlow 2.21.0' for backend=tf."""
    return f"{LIBRARIES[name][0]} {version or ''}".strip()


class Runtime(Protocol):
    name: str  # the config's name for it: torch, tf, onnxruntime
    device: str  # where it runs: cpu, cuda, cuda:1
    image_size: int | None  # the input size the model fixes (None: open)
    version: str  # the version of the library that runs the model (recorded in the results)

    def inputs(self, crops: np.ndarray) -> Any:
        """Cached NHWC crops (uint8, or float32 for pipelines without a uint8 step) to the model's
        exact MLPerf input, in this runtime's form (a numpy array, a tensor on the device)."""

    def take(self, inputs: Any, rows: np.ndarray) -> Any:
        """Rows of a batch made by `inputs` (LoadGen's samples held in memory)."""

    def __call__(self, inputs: Any) -> np.ndarray:
        """float32 logits, one row per image (1001 columns for MLPerf's models: 0 is background)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Options:
    """How a runtime runs the model: the config's device, threads and model-form settings."""
    device: str = "cpu"  # cpu | cuda | cuda:N (auto is resolved by the torch runtime)
    threads: int | None = None
    fold_bn: bool = True  # torch: batch norms folded into the convolutions
    cpu_fusion: bool | str = "graph"  # torch on CPU: graph | true | false (runtimes/pytorch.py; needs fold_bn)
    cuda_graphs: bool = True  # torch on CUDA: the forward recorded as CUDA graphs and replayed
    role: str = "backend"  # backend | reference: the config key that named the runtime
    optimize: bool = True  # tf: let Grappler rewrite the graph (off for layer-by-layer comparison)
    precision: str = "fp32"  # torch: fp32 (exact) | bf16 | fp16 | tf32 | int8 (see runtimes/pytorch.py)
    transform: Any = None  # torch: a user's transform of the converted model (nn/transform.Transform)


def default_batch_size(device: str) -> int:
    """Measured on a 2-core CPU: at 16 a batch's activations stay in the caches and both models (and
    TensorFlow) run faster than at 8, 32 or 64; a GPU wants large batches."""
    return 256 if str(device).startswith("cuda") else 16


def create(name: str, source, options: Options = Options()) -> Runtime:
    """The runtime `name` (backend= or reference= in the config) for the model `source`
    (runtimes.source.ModelSource)."""
    if name not in RUNTIMES:
        raise ConfigError(f"{options.role}={name}: expected one of {', '.join(RUNTIMES)}")
    return importlib.import_module(RUNTIMES[name]).create(source, options)


class NumpyInputs:
    """Inputs for runtimes fed numpy arrays: the model's normalisation applied to the crops."""
    normalize: Any

    def inputs(self, crops: np.ndarray) -> np.ndarray:
        return self.normalize(crops)

    def take(self, inputs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return inputs[rows]
