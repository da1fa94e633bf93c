"""Each runtime declares what it can run (runtimes.RUNTIMES) and has every member callers read
(runtimes.RuntimeBase); what it cannot run is refused by `supports` before it is made."""

import numpy as np
import pytest

from benchmark import runtimes
from benchmark.nn.transform import Transform
from preprocessing.errors import ConfigError


def test_the_declared_precisions_are_the_torch_runtimes():
    from benchmark.runtimes.pytorch import PRECISIONS

    assert runtimes.RUNTIMES["torch"].precisions == tuple(PRECISIONS)
    assert all(c.precisions == ("fp32",) for name, c in runtimes.RUNTIMES.items() if name != "torch")


@pytest.mark.parametrize("call,message", [
    (lambda: runtimes.supports("jax"), "backend=jax: expected one of torch, tf, onnxruntime, openvino"),
    (lambda: runtimes.supports("jax", "reference"), "reference=jax: expected one of .* or null"),
    (lambda: runtimes.supports("tf", module=True), "model=module runs your module in PyTorch: backend=torch, not backend=tf"),
    (lambda: runtimes.supports("openvino", transform=Transform("m:f")),
     "model.transform=m:f transforms the converted PyTorch model: it runs with backend=torch, not backend=openvino"),
    (lambda: runtimes.supports("onnxruntime", precision="bf16"), "precision=bf16 is a precision of the torch backend, "
                                                                "not backend=onnxruntime"),
    (lambda: runtimes.supports("torch", precision="int4"), "precision=int4: expected one of fp32, bf16, fp16, tf32, int8"),
    (lambda: runtimes.supports("torch", "reference", backend="torch"), "reference=torch is the exact conversion"),
    (lambda: runtimes.supports("tf", "reference", backend="tf"), "reference=tf compares the torch backend"),
    (lambda: runtimes.supports("onnxruntime", "reference", backend="onnxruntime"), "compares the torch backend"),
])
def test_what_a_runtime_cannot_run_is_refused(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_what_each_runtime_can_run():
    assert runtimes.supports("torch", precision="int8", transform=Transform("m:f"), module=True).cuda
    assert runtimes.supports("torch", "reference", module=True, backend="torch").reference == "exact"
    assert runtimes.supports("tf", "reference", backend="onnxruntime").library_key == "tensorflow"
    assert runtimes.framework("openvino", "2025.3") == "OpenVINO 2025.3"


def test_a_runtime_without_a_capability_answers_for_it():
    """The members callers read, on a runtime that has none of the optional capabilities: the loop's
    `submit` computes the batch at once; no padding, no compile sizes, no graph tensors."""
    class Doubling(runtimes.NumpyInputs):
        name, device, image_size, version = "doubling", "cpu", None, "1"

        def __init__(self):
            self.normalize = lambda crops: crops.astype(np.float32)

        def __call__(self, x):
            return x.reshape(len(x), -1) * 2

    r = Doubling()
    pending = r.submit(np.ones((2, 1, 1, 3), np.float32))
    assert pending.done and np.array_equal(pending.result(), np.full((2, 3), 2.0))
    assert r.padding(reset=True) is None and r.expect_batch_sizes([1, 4]) is None
    assert (r.precision, r.numerics, r.cpu_fusion, r.cuda_graphs, r.folded, r.logits_tensor) == \
        ("fp32", None, None, None, None, None)
    with pytest.raises(ConfigError, match="doubling gives no tensor of the graph by name"):
        r.tensors(None, ["x"])
