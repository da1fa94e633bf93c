"""A precision's arithmetic belongs to its runtime's forward: set around it, the caller's restored
after, and read inside it for the results. The fault guarded: process-wide flags, where the exact
fp32 runtime built after a tf32 one turned TF32 off for both (a tf32 run that measured fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.evaluation.normalize import Normalizer
from benchmark.nn.numerics import in_force
from benchmark.runtimes import pytorch
from benchmark.runtimes.pytorch import TorchRuntime


class Probe(torch.nn.Module):
    """Records the flags in force each time it runs."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 5)
        self.seen: list[dict] = []

    def forward(self, x):
        self.seen.append(in_force())
        return self.linear(x.mean((2, 3)))


def runtime(precision: str, monkeypatch) -> tuple[TorchRuntime, Probe]:
    # tf32 and fp16 run on CUDA only; their flags are what is checked here, so on the CPU too
    monkeypatch.setattr(pytorch, "check_precision", lambda precision, device: None)
    probe = Probe()
    return TorchRuntime(probe, Normalizer("mobilenet"), "cpu", precision=precision), probe


CROPS = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)


def test_tf32_runs_tf32_after_an_exact_runtime_is_built(monkeypatch):
    """As run.setup builds them: the precision's runtime first, then the exact fp32 one."""
    before = in_force()
    tf32, tf32_probe = runtime("tf32", monkeypatch)
    fp32, fp32_probe = runtime("fp32", monkeypatch)
    assert in_force() == before  # building a runtime changes nothing in the process
    tf32(tf32.inputs(CROPS))
    assert tf32_probe.seen[-1] == {"float32_matmul": "high", "cudnn_tf32": True, "cudnn_deterministic": True,
                                   "cudnn_benchmark": False}
    assert in_force() == before  # restored after the forward
    fp32(fp32.inputs(CROPS))
    tf32(tf32.inputs(CROPS))  # the fp32 forward in between leaves tf32's own
    assert [s["float32_matmul"] for s in fp32_probe.seen + tf32_probe.seen[1:]] == ["highest", "high"]
    assert not fp32_probe.seen[0]["cudnn_tf32"] and fp32_probe.seen[0]["cudnn_deterministic"]
    assert in_force() == before
    assert tf32.numerics["flags"] == tf32_probe.seen[0] and fp32.numerics["precision"] == "fp32"


def test_exact_fp32_despite_a_process_wide_reduced_precision(monkeypatch):
    """A user's torch.set_float32_matmul_precision("medium") (bfloat16 matmuls on a CPU) does not
    reach the exact model's forward, and is the user's again after it."""
    fp32, probe = runtime("fp32", monkeypatch)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        fp32(fp32.inputs(CROPS))
        assert probe.seen[-1]["float32_matmul"] == "highest"
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)


def test_autocast_dtype_is_read_inside_the_forward(monkeypatch):
    import torch.ops  # noqa: F401

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no bfloat16 support in oneDNN")
    bf16, _ = runtime("bf16", monkeypatch)
    bf16(bf16.inputs(CROPS))
    assert bf16.numerics["autocast"] == "bfloat16"
    fp32, _ = runtime("fp32", monkeypatch)
    fp32(fp32.inputs(CROPS))
    assert fp32.numerics["autocast"] is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (PyTorch sees none)")
@pytest.mark.parametrize("precision", ["tf32", "fp16"])
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_cuda_precisions_compute_other_logits_than_fp32(precision, cuda_graphs):
    """ResNet-50's structure (random weights): tf32 and fp16 move the logits off exact fp32's, even
    with the fp32 runtime built after theirs (as run.setup builds them), and fp32 stays bit for bit
    what it is alone."""
    from benchmark.bench.cuda import random_model
    from benchmark.evaluation.loop import logits
    from tests.helpers import crops

    model, images = random_model("resnet50"), crops(8, 224)
    normalize = Normalizer("vgg")
    alone = logits(TorchRuntime(model, normalize, "cuda", image_size=224, cuda_graphs=cuda_graphs), images, 4, False)
    faster = TorchRuntime(model, normalize, "cuda", image_size=224, precision=precision, cuda_graphs=cuda_graphs)
    exact = TorchRuntime(model, normalize, "cuda", image_size=224, cuda_graphs=cuda_graphs)
    got = logits(faster, images, 4, False)
    fp32 = logits(exact, images, 4, False)
    assert np.array_equal(fp32, alone)
    assert np.abs(got - fp32).max() > 1e-4 * np.abs(fp32).max()  # a different arithmetic ran
    assert faster.numerics["flags"]["float32_matmul"] == ("high" if precision == "tf32" else "highest")
    assert faster.numerics["flags"]["cudnn_tf32"] == (precision == "tf32")


def test_tensorflow_reference_is_pinned_to_the_cpu_and_says_where_it_ran(fixture_graphs, tmp_path):
    """reference=tf runs where the results say, the CPU: its session is given no GPU (a TensorFlow
    with GPU support would place the graph on one, TF32 on), and the devices it had are recorded."""
    from preprocessing.tf_import import import_tensorflow
    from tests.helpers import run_benchmark, validation_images, write_layout

    tf = import_tensorflow()
    root = write_layout(tmp_path / "val", "val_map", validation_images(4))
    r = run_benchmark(f"model.checkpoint={fixture_graphs(0.25, 96, read_identities=False)}", f"dataset.root={root}",
                      f"cache_dir={tmp_path / 'cache'}", "reference=tf", f"results_file={tmp_path / 'r.json'}")
    ref = r["reference"]
    assert ref["other"]["device"] == "cpu" and all(":CPU:" in d for d in ref["other"]["devices"]) and ref["other"]["devices"]
    assert not tf.config.experimental.tensor_float_32_execution_enabled()
