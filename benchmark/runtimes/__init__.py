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


@dataclass(frozen=True)
class Capabilities:
    """What one runtime can run, declared once here (its module is imported only when it is made) and
    checked by `supports` before it is: no code outside runtimes/ tests a runtime's name."""
    module: str  # the module whose create(source, options) makes it
    library: str  # as a person names it (a submission's `framework`)
    library_key: str | None  # its key in the results' library versions (evaluation/report.py)
    precisions: tuple[str, ...] = ("fp32",)  # precision= it runs
    transforms: bool = False  # runs a user's transform of the converted model (model.transform=)
    modules: bool = False  # runs a user's own module (model=module)
    cuda: bool = False  # runs on a CUDA device (device=cuda)
    checked: bool = True  # its answers can be checked against a reference (it runs a conversion, not the graph)
    # as reference=: "graph", the checkpoint itself (any run); "exact", the exact conversion of the
    # checkpoint a user's module ports (model=module only: otherwise the backend would be compared with itself)
    reference: str = "graph"

    def check_precision(self, name: str, precision: str) -> None:
        if precision not in self.precisions:
            owners = [n for n, c in RUNTIMES.items() if precision in c.precisions]
            if not owners:
                known = dict.fromkeys(p for c in RUNTIMES.values() for p in c.precisions)
                raise ConfigError(f"precision={precision}: expected one of {', '.join(known)}")
            raise ConfigError(f"precision={precision} is a precision of the {' and '.join(owners)} backend, "
                              f"not backend={name}")


# backend / reference name in the config -> what it is and can do
RUNTIMES = {
    "torch": Capabilities("benchmark.runtimes.pytorch", "PyTorch", "torch",
                          ("fp32", "bf16", "fp16", "tf32", "int8"), transforms=True, modules=True, cuda=True,
                          reference="exact"),
    "tf": Capabilities("benchmark.runtimes.tf", "TensorFlow", "tensorflow", checked=False),
    "onnxruntime": Capabilities("benchmark.runtimes.ort", "ONNX Runtime", None),
    "openvino": Capabilities("benchmark.runtimes.openvino", "OpenVINO", None),
}


def framework(name: str, version: str | None) -> str:
    """The library that ran the model, with its version: 'TensorFlow 2.21.0' for backend=tf."""
    return f"{RUNTIMES[name].library} {version or ''}".strip()


def supports(name: str, role: str = "backend", precision: str = "fp32", transform=None, module: bool = False,
             backend: str | None = None) -> Capabilities:
    """`name`'s capabilities, or a ConfigError saying what it cannot run: a user's module, a transform,
    a precision; as reference=, the runtime it checks (`backend`) must run a conversion of its own."""
    if name not in RUNTIMES:
        raise ConfigError(f"{role}={name}: expected one of {', '.join(RUNTIMES)}"
                          + (" or null" if role == "reference" else ""))
    caps = RUNTIMES[name]
    if role == "backend":
        if module and not caps.modules:
            raise ConfigError(f"model=module runs your module in PyTorch: backend=torch, not backend={name}")
        if transform is not None and not caps.transforms:
            raise ConfigError(f"model.transform={transform.target} transforms the converted PyTorch model: it runs "
                              f"with backend=torch, not backend={name}")
        caps.check_precision(name, precision)
        return caps
    if caps.reference == "exact" and not module:
        raise ConfigError(f"reference={name} is the exact conversion a model=module is compared with; "
                          f"the model runs it as backend={name}")
    # a module (the user's code) is checked against any of them; a conversion against another runtime
    if backend is not None and not module and (not RUNTIMES[backend].checked or name == backend):
        raise ConfigError(f"reference={name} compares the torch backend (or onnxruntime running the converted "
                          f"model) with it, not backend={backend}")
    return caps


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
    (runtimes.source.ModelSource), refused first where it cannot run what `options` ask (`supports`;
    a reference's pairing with the backend is the run's to check: spec.RunSpec.from_config)."""
    if options.role == "backend":
        supports(name, "backend", options.precision, options.transform, source.is_module)
    elif name not in RUNTIMES:
        raise ConfigError(f"{options.role}={name}: expected one of {', '.join(RUNTIMES)}")
    return importlib.import_module(RUNTIMES[name].module).create(source, options)


class Ready:
    """A batch's logits, computed when the runtime was called (`RuntimeBase.submit`)."""
    done = True

    def __init__(self, logits: np.ndarray):
        self.logits = logits

    def result(self) -> np.ndarray:
        return self.logits


class RuntimeBase:
    """What every runtime has beyond the protocol's core, with the answers of a runtime that lacks the
    capability: callers read these members, never probe for them. A runtime overrides what it does."""
    precision = "fp32"  # the precision it runs
    numerics: dict | None = None  # what its forward ran with (torch: flags, autocast, int8's engine)
    folded: bool | None = None  # torch's: batch norms folded into the convolutions by the harness
    cpu_fusion: bool | str | None = None  # torch's: how its convolutions ran ("graph", true, false)
    cuda_graphs: bool | None = None  # torch's: the forward replayed as CUDA graphs
    devices: list[str] | None = None  # the devices its library saw (TensorFlow's session)
    logits_tensor: str | None = None  # the graph's tensor its logits are read from (TF, ONNX)

    def submit(self, inputs) -> Ready:
        """The batch's logits started: computed here, unless the runtime returns before its device is done."""
        return Ready(self(inputs))

    def expect_batch_sizes(self, sizes) -> None:
        """Batch sizes a caller will send (LoadGen's MultiStream queries), for runtimes that compile per size."""

    def padding(self, reset: bool = False) -> dict | None:
        """Rows a compiled model computed and how many were padding; None for a runtime that never pads."""
        return None

    def tensors(self, inputs, names: list[str]) -> list[np.ndarray]:
        """The graph's tensors `names` on a batch (benchmark.compare's reference)."""
        raise ConfigError(f"{self.name} gives no tensor of the graph by name: benchmark.compare's reference is "
                          f"TensorFlow (a frozen graph) or ONNX Runtime (an .onnx checkpoint)")


class NumpyInputs(RuntimeBase):
    """Inputs for runtimes fed numpy arrays: the model's normalisation applied to the crops."""
    normalize: Any

    def inputs(self, crops: np.ndarray) -> np.ndarray:
        return self.normalize(crops)

    def take(self, inputs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return inputs[rows]
