"""The converted model compiled into oneDNN Graph partitions for CPU inference (cpu_fusion=graph).

PyTorch calls oneDNN once per operator, and every call pays a fixed cost of tens of microseconds
before any arithmetic; at batch 1 that is most of a small model's time, even with each convolution
fused with its activation (nn/cpu_fusion.py: one call per convolution). Here the model, its padding
fixed for the image size, is traced, frozen and handed to TorchScript's oneDNN Graph fuser, which
compiles the convolutions with their activations (and ResNet's adds) into partitions once and
afterwards only executes them (results/benchmarks.md: the cpu_fusion rows).

Exactness: oneDNN Graph chooses its own convolution kernels, so the logits differ from the eager
model's in the last float32 digits, as eager's differ from TensorFlow's; the tests hold it to
TensorFlow's answers like every other path. A model that says where its classifier begins
(`classifier_split()`: a converted graph does) runs that last product eagerly, outside the
partitions: oneDNN Graph's matrix product sums its ~1,000-2,000 terms in another order than
TensorFlow's and PyTorch's own, and took the largest logit difference from TensorFlow's to about
twice eager's (Keras' MobileNetV2 1.34e-5 against 6.68e-6, InceptionV3 1.67e-5 against 1.05e-5,
measured layer by layer: every tensor before the product was as close as eager's or closer); the
product is a few per cent of the time.

An answer must not depend on when it was computed. TorchScript's profiling executor runs a graph
unfused on its first calls at a new input shape and fused after, so each batch size gets its own
script, warmed up on zeros before its first real batch: every answer comes from the compiled
partitions of its batch size. Which batch sizes get a script: nn/compiled.py.

bf16 (precision=bf16): the model is traced under autocast to bfloat16, so the script holds
autocast's casts and the fuser compiles bf16 partitions; run op by op under autocast instead, bf16 was
slower than exact fp32's partitions (measured on the real 0.25/224 graph, 2 cores with AVX512-BF16:
1,226 against 1,228 images/s at batch 16, 246 against 1,095 at batch 1; compiled, 1,979 and 1,495).
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from torch import nn

from benchmark.nn.compiled import CompiledPerBatchSize
from benchmark.nn.layers import static_padding
from preprocessing.errors import ConfigError

class CompileMismatch(ConfigError):
    """The compiled model computes something else than the model: refused (cpu_fusion=false runs it)."""


WARM_UP_CALLS = 2  # the profiling executor profiles the first call and runs fused from the second


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.jit, "enable_onednn_fusion")


@contextlib.contextmanager
def _onednn_fusion():
    """The fuser is a process-wide switch: on only while these scripts run (TorchScript int8 models
    in the same process keep their own kernels)."""
    before = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(True)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(before)


@contextlib.contextmanager
def _traced_casts(dtype: torch.dtype | None):
    """Autocast to `dtype` while tracing, its casts recorded in the trace as ops: TorchScript's own
    autocast pass, a process-wide switch, is off meanwhile, since it would insert casts again."""
    if dtype is None:
        yield
        return
    before = torch._C._jit_set_autocast_mode(False)  # returns the mode it replaces
    try:
        with torch.autocast("cpu", dtype=dtype, cache_enabled=False):
            yield
    finally:
        torch._C._jit_set_autocast_mode(before)


class OneDNNGraphModel(CompiledPerBatchSize):
    """`model` (batch norms folded) for CPU inference on images of `image_size`; `model` is left as
    it is. Called on an NCHW float32 batch, returns the logits (bfloat16 where traced under autocast
    to it: the runtime makes them float32)."""

    def __init__(self, model: nn.Module, image_size: int, autocast: torch.dtype | None = None):
        super().__init__(image_size)
        self.model = static_padding(copy.deepcopy(model).cpu().eval(), image_size)
        self.autocast = autocast  # traced under autocast to this dtype (bf16), or None: float32
        # float32: the classifier, where the model names it, run eagerly (exactness, above); bf16
        # compiles the whole model, the product in bf16 as autocast runs it
        split = getattr(self.model, "classifier_split", None) if autocast is None else None
        self.features, self.head = (split() if split else None) or (self.model, None)

    def compile(self, n: int) -> torch.jit.ScriptModule:
        example = torch.zeros(n, 3, self.image_size, self.image_size).contiguous(memory_format=torch.channels_last)
        with warnings.catch_warnings(), torch.no_grad():
            # TorchScript is marked deprecated, and the tracer warns of the shape checks it fixes:
            # the script is made for this one shape and used for it only.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            with _traced_casts(self.autocast):
                script = torch.jit.freeze(torch.jit.trace(self.features, example))
            with _onednn_fusion():
                for _ in range(WARM_UP_CALLS):
                    script(example)
        if self.autocast is None:
            self.check(script, n)
        return script

    def check(self, script: torch.jit.ScriptModule, n: int) -> None:
        """The compiled model against the eager one on a random batch: oneDNN Graph has fused a
        convolution, its bias and a residual sum read twice into something else (Keras' ResNet50V2:
        logits 30 off); such a model is refused, never run. Float32 fusions differ by ~1e-5 of the
        logits' range; 1e-3 leaves room and catches any such fault."""
        x = torch.randn(n, 3, self.image_size, self.image_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            got = self.run(script, x).float()
        with torch.no_grad():
            want = self.model(x).float()
        scale = float(want.max() - want.min()) or 1.0
        if not torch.isfinite(got).all() or float((got - want).abs().max()) > 1e-3 * scale:
            raise CompileMismatch(f"cpu_fusion=graph: the model compiled into oneDNN Graph partitions computes "
                                  f"something else than the model itself (largest difference "
                                  f"{float((got - want).abs().max()):.3g} on logits spanning {scale:.3g}): this "
                                  f"PyTorch's fuser mishandles one of its patterns; run it with cpu_fusion=true "
                                  f"(each convolution fused on its own, where the model has a rule: "
                                  f"model=graph does) or cpu_fusion=false")

    def run(self, script: torch.jit.ScriptModule, x: torch.Tensor) -> torch.Tensor:
        with _onednn_fusion():
            features = script(x.contiguous(memory_format=torch.channels_last))
        if self.head is None:
            return features
        with torch.no_grad():
            return self.head(features)
