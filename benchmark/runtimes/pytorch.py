"""The converted model in PyTorch, on CPU or CUDA: the harness's own runtime (backend=torch)."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import torch

from benchmark.evaluation.normalize import Normalizer, TorchNormalizer
from benchmark.nn.compiled import CompiledPerBatchSize
from benchmark.nn.numerics import applied, in_force, wanted
from benchmark.runtimes import RuntimeBase
from preprocessing.errors import ConfigError


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} asked for, but PyTorch sees no CUDA device")
    return torch.device(name)


def reuse_freed_memory() -> None:
    """Keep freed memory in the process (glibc): by default glibc hands every large block back to the
    system when it is freed, and PyTorch allocates each operator's output afresh, so every large
    activation was page-faulted in (and zeroed by the kernel) again on every batch: 5-8 million page
    faults and 11-18 s of system time in a 1,000-image ResNet-50 pass at batch 16, against 0.2-0.6
    million without. Measured: 1.1-1.4x the images/s on both models. No effect elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # malloc.h
    libc.mallopt(M_MMAP_MAX, 0)  # large blocks from the heap, reused, not mmap'ed and unmapped each time
    libc.mallopt(M_TRIM_THRESHOLD, 2**30)  # and the heap's top kept, not trimmed after each batch


# precision= -> where it runs and how. fp32 is exact (TF's float32 arithmetic); the others are what
# MLPerf allows a submission as long as its accuracy meets the target.
PRECISIONS = {
    "fp32": "float32 throughout, TF32 off: the graph's own arithmetic (CPU or CUDA)",
    "bf16": "autocast to bfloat16 (on a CPU with bf16 support traced into oneDNN Graph's bf16 partitions, "
            "cpu_fusion=graph, else op by op; or CUDA)",
    "fp16": "autocast to float16 (CUDA)",
    "tf32": "float32 with TF32 tensor-core matrix products and convolutions (CUDA, Ampere or later)",
    "int8": "post-training int8 quantization, calibrated on an MLPerf calibration list (CPU, oneDNN; 7-bit "
            "weights on a CPU without VNNI)",
}


def check_precision(precision: str, device: torch.device) -> None:
    """A clear error where the precision cannot run on the device, before anything is computed."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision}: expected one of {', '.join(PRECISIONS)}")
    cpu = device.type == "cpu"
    if precision in ("fp16", "tf32") and cpu:
        raise ConfigError(f"precision={precision} runs on CUDA (device=cuda); on CPU use bf16 or int8")
    if precision == "int8" and not cpu:
        raise ConfigError("precision=int8 runs on CPU (PyTorch's oneDNN quantized kernels); set device=cpu")
    if precision == "bf16" and cpu and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise ConfigError("precision=bf16: this CPU has no bfloat16 support in oneDNN (AVX512-BF16, AMX or "
                          "AVX512 with VNNI); bf16 would be emulated, not measured")
    if precision == "bf16" and not cpu and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support")


# A batch of the evaluation loop crosses to CUDA from pinned memory; LoadGen's sample library loads
# thousands of crops at once, and PyTorch's cache would keep that much page-locked memory after.
PINNED_AT_MOST = 256 * 2**20


class Pending:
    """A batch's logits: computed (CPU), or still being computed and copied back (CUDA)."""

    def __init__(self, logits: torch.Tensor, copied: "torch.cuda.Event | None" = None):
        self.logits, self.copied = logits, copied
        self.done = copied is None

    def result(self) -> np.ndarray:
        if self.copied is not None:
            self.copied.synchronize()
        return self.logits.numpy()


class TorchRuntime(RuntimeBase):
    """The converted model on its device: cached crops to input tensors, input tensors to logits.
    `fusion` (CPU, fp32; bf16 "graph" only): "graph", the model compiled into oneDNN Graph partitions
    (nn/onednn_graph.py), or "ops", each convolution fused with its activation through oneDNN
    (nn/cpu_fusion.py), made at the first batch's input size; None: eager. `cuda_graphs` (CUDA):
    the forward recorded as CUDA graphs and replayed (nn/cuda_graph.py). `precision`: see
    PRECISIONS; int8 runs once `quantize` has calibrated the model. `channels_last`: the model's
    and the input's memory layout (NHWC in memory, as the cache holds the crops; false: NCHW).
    `cudnn_benchmark`: cuDNN times its algorithms and keeps the fastest (its last bits may change
    from run to run; the CUDA bench's variant), instead of its deterministic choice.

    The precision's arithmetic (TF32 or not, cuDNN's choice) is set around each forward and the
    caller's restored after (nn/numerics.py): two runtimes in one process never change each other's.
    What was in force inside the first forward is kept in `numerics` for the results.

    On CUDA a batch's crops cross from pinned host memory and its logits come back into pinned
    host memory, both without waiting (`submit`), so the host reads the next batch from the cache
    while the GPU computes this one."""
    name = "torch"

    def __init__(self, model: torch.nn.Module, normalize: Normalizer, device: torch.device | str,
                 fusion: str | None = None, image_size: int | None = None, precision: str = "fp32",
                 cuda_graphs: bool = False, channels_last: bool = True, cudnn_benchmark: bool = False):
        device = torch.device(device)
        check_precision(precision, device)
        self.precision = precision
        self.flags = wanted(precision, cudnn_benchmark)
        self.seen: dict | None = None  # the flags in force inside the first forward
        self.autocast: str | None = None  # the autocast dtype in force inside the model's forward
        if device.type == "cpu":
            reuse_freed_memory()
        # Channels-last: the cached crops are NHWC already, and oneDNN's convolutions are fastest there.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format).eval()
        self.normalize, self.torch_device, self.device = normalize, device, str(device)
        self.version = torch.__version__
        self.image_size = image_size
        self.to_input = TorchNormalizer(normalize, device)
        if fusion not in (None, "graph", "ops"):
            raise ValueError(f"fusion={fusion!r}: expected 'graph', 'ops' or None")
        # oneDNN's fused convolutions are float32's; oneDNN Graph compiles bf16 too (nn/onednn_graph.py)
        self.fusion = fusion if device.type == "cpu" and (precision == "fp32" or (precision, fusion) == (
            "bf16", "graph")) else None
        self.cuda_graphs = bool(cuda_graphs) and device.type == "cuda"
        self.fused = None  # the fused model (CPU) or its CUDA graphs, made at the first batch's input size
        self.sizes: set[int] = set()  # batch sizes compiled as they are (expect_batch_sizes)
        self.quantized: torch.nn.Module | None = None
        self.int8_models: dict[torch.Size, torch.nn.Module] = {}  # the quantized model's copy per input shape

    def quantize(self, calibration: np.ndarray, batch_size: int, saved: Path | None = None) -> None:
        """precision=int8: the model quantized with activation ranges observed on the `calibration`
        crops (cached, in this runtime's exact fp32 input), as TorchScript, written to `saved`; or
        loaded from `saved` when that exists."""
        from benchmark.nn.quantize import load_int8, quantize_int8, save_int8, traced_int8

        self.int8_models = {}
        if saved is not None and saved.is_file():
            self.quantized = load_int8(saved)
            return
        batches = (self.inputs(np.array(calibration[i:i + batch_size])) for i in range(0, len(calibration), batch_size))
        with applied(wanted("fp32")):  # the observers see exact float32 activations
            self.quantized = traced_int8(quantize_int8(self.model, self.image_size, batches), self.image_size)
        if saved is not None:
            from preprocessing.files import write_atomically

            write_atomically(saved, lambda tmp: save_int8(self.quantized, tmp))

    def expect_batch_sizes(self, sizes) -> None:
        """Batch sizes a caller will send (LoadGen's MultiStream queries): compiled for as they are,
        not padded to the run's batch size (cpu_fusion=graph, CUDA graphs)."""
        self.sizes |= {int(n) for n in sizes}
        if isinstance(self.fused, CompiledPerBatchSize):
            self.fused.sizes |= self.sizes

    def padding(self, reset: bool = False) -> dict | None:
        """Rows computed by the compiled model and how many were zero padding (a batch of a size not
        compiled for runs padded to the next compiled size); None for a model that never pads."""
        f = self.fused
        if not isinstance(f, CompiledPerBatchSize):
            return None
        # padded_to: the largest size a batch is padded to; a smaller one goes to the next compiled size
        counts = {"rows_computed": f.rows, "padding_rows": f.padding, "padded_to": f.main,
                  "compiled_sizes": sorted(n for n in {1, f.main, *f.sizes} if n is not None)}
        if reset:
            f.rows = f.padding = 0
        return counts

    def inputs(self, batch: np.ndarray) -> torch.Tensor:
        """A batch of cached crops (NHWC) as MLPerf's exact float32 input, NCHW (channels-last)."""
        with torch.inference_mode():
            if batch.dtype == np.uint8:
                # uint8 crosses to the device, where MLPerf's exact float32 input is made.
                x = self.to_input(self._to_device(torch.from_numpy(batch)))
            else:
                x = self._to_device(torch.from_numpy(self.normalize(batch))).permute(0, 3, 1, 2)
            return x.contiguous(memory_format=self.memory_format)

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        if self.torch_device.type != "cuda" or host.nbytes > PINNED_AT_MOST:
            return host.to(self.torch_device)
        # From pinned memory the copy runs without the host waiting; PyTorch's pinned-memory cache
        # keeps the block until the copy is done.
        return host.pin_memory().to(self.torch_device, non_blocking=True)

    def take(self, inputs: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Rows gathered in NHWC memory order, so the batch has the layout `inputs` gives."""
        with torch.inference_mode():
            index = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(inputs.device)
            return inputs.permute(0, 2, 3, 1).index_select(0, index).permute(0, 3, 1, 2)

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return self.submit(x).result()

    def submit(self, x: torch.Tensor) -> Pending:
        """The batch's logits, started: on CUDA computed and copied back while the host goes on."""
        with torch.inference_mode():
            logits = self._forward(x).float()
            if logits.device.type != "cuda":
                return Pending(logits)
            host = torch.empty(logits.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(logits, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(torch.cuda.current_stream(self.torch_device))
            return Pending(host, copied)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with applied(self.flags):
            if self.seen is None:
                self.seen = in_force()
            return self._compute(x)

    def _compute(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "int8":
            return self._int8(x)  # channels-last as it comes: oneDNN's quantized convolutions' own layout
        if self.fused is None and (self.fusion or self.cuda_graphs):
            if self.fusion:
                self.fused = fused_for_cpu(self.fusion, self.model, x.shape[-1],
                                           torch.bfloat16 if self.precision == "bf16" else None)
                self.autocast = self.autocast or _dtype_name(getattr(self.fused, "autocast", None))
            else:
                from benchmark.nn.cuda_graph import CUDAGraphModel

                self.fused = CUDAGraphModel(self._eager, x.shape[-1], self.torch_device)
            self.expect_batch_sizes(())  # the sizes declared before it was made
        return (self._eager if self.fused is None else self.fused)(x)

    def _int8(self, x: torch.Tensor) -> torch.Tensor:
        """The quantized model on `x`, a copy of it per input shape: oneDNN's quantized convolutions
        keep the primitive made for the first shape they run and make one anew on every call of any
        other (measured on the real 0.25/224 graph: batch 1 after batch 16 at 2.2 ms an image, 1.2 ms
        in a copy of its own). The batch stays channels-last: the same logits as from NCHW, 7 % sooner
        (no copy into NCHW and back)."""
        if self.quantized is None:
            raise RuntimeError("precision=int8: the model has not been calibrated (TorchRuntime.quantize)")
        model = self.int8_models.get(x.shape)
        if model is None:
            import copy

            model = copy.deepcopy(self.quantized) if self.int8_models else self.quantized
            self.int8_models[x.shape] = model
        return model(x)

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            # no cast cache: each weight is cast once per forward anyway, and CUDA graphs need it off
            with torch.autocast(self.torch_device.type, dtype=dtype, cache_enabled=False):
                self.autocast = _dtype_name(torch.get_autocast_dtype(self.torch_device.type))
                return self.model(x)
        return self.model(x)

    @property
    def numerics(self) -> dict:
        """What the forward ran with, for the results: the precision, the flags read inside the
        first forward (None before any), the autocast dtype, int8's engine."""
        engine = torch.backends.quantized.engine if self.precision == "int8" else None
        return {"precision": self.precision, "flags": self.seen, "autocast": self.autocast, "int8_engine": engine}

    @property
    def cpu_fusion(self) -> bool | str:
        """What ran, as the config's cpu_fusion spells it: "graph", true (fused ops) or false."""
        return {"graph": "graph", "ops": True, None: False}[self.fusion]

    def close(self) -> None:
        pass


def fused_for_cpu(fusion: str, model: torch.nn.Module, image_size: int, autocast: torch.dtype | None = None):
    """`autocast`: bf16's dtype, traced into the oneDNN Graph script (fusion="graph" only)."""
    if fusion == "graph":
        from benchmark.nn.onednn_graph import OneDNNGraphModel

        return OneDNNGraphModel(model, image_size, autocast)
    from benchmark.nn.cpu_fusion import fuse_for_cpu

    return fuse_for_cpu(model, image_size)


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def cpu_fusion_mode(value) -> str | None:
    """The config's cpu_fusion (graph | true | false) as TorchRuntime's `fusion`."""
    modes = {"graph": "graph", True: "ops", False: None}
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if not isinstance(value, (bool, str)) or value not in modes:
        raise ConfigError(f"cpu_fusion={value}: expected graph, true or false")
    return modes[value]


def check_classes(model: torch.nn.Module, image_size: int, classes, weights: Path) -> None:
    """A user's module answers one image of the input size with 1000 or 1001 logits (model.classes,
    when set): checked on one blank image before any is read."""
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, 3, image_size, image_size))
    except Exception as e:
        raise ConfigError(f"model=module ({weights}): the module fails on a 1x3x{image_size}x{image_size} input "
                          f"({type(e).__name__}: {e})") from e
    width = out.shape[-1] if isinstance(out, torch.Tensor) and out.dim() == 2 and len(out) == 1 else None
    if width not in (1000, 1001) or (classes is not None and width != int(classes)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model=module ({weights}): the module answers a 1x3x{image_size}x{image_size} input with "
                          f"{shape}; expected [1, {classes or '1000 or 1001'}] logits")


def create(source, options) -> TorchRuntime:
    """backend=torch: the checkpoint converted (or an export loaded); oneDNN-fused on CPU: compiled
    into oneDNN Graph partitions (cpu_fusion=graph; where this PyTorch lacks the fuser, the fused
    ops run, said on stderr and recorded in the results) or per convolution (cpu_fusion=true). With
    a transform (model.transform=), a copy of the converted model transformed runs, the same way."""
    from benchmark.nn import cpu_fusion, onednn_graph

    if source.ckpt.is_onnx and not options.fold_bn:
        raise ConfigError(f"fold_bn=false: {source.ckpt.path} is an ONNX model, whose batch norms tf2onnx has "
                          f"folded into the convolutions; it converts to the folded model only")
    if options.threads:
        torch.set_num_threads(int(options.threads))
    device = select_device(options.device)
    exact = model = source.torch_model(options.fold_bn)
    image_size = source.resolve_size(getattr(getattr(model, "spec", None), "image_size", None))
    if source.is_module:
        check_classes(model, image_size, source.model.classes, source.ckpt.path)
    if options.transform is not None:
        model = options.transform.apply(model)  # a copy transformed; the exact model stays as it is
    fusion = cpu_fusion_mode(options.cpu_fusion)
    fusion = fusion if device.type == "cpu" and (options.fold_bn or source.is_module) else None
    # per-convolution fusion rebuilds the model from its weights by its family's rule: a user's module,
    # or a transform that returns a module of no family, has none (refused here, not at the first
    # batch); a transform's hook, subclass or new activation would be dropped by it (refused too).
    # cpu_fusion=graph traces the model as it runs, hooks and subclasses included (nn/layers.py's
    # static_padding leaves such layers as they are).
    lost = None if options.transform is None else cpu_fusion.departure(model, exact)
    if fusion == "ops" and not cpu_fusion.has_rule(model):
        raise ConfigError(f"cpu_fusion=true fuses a model by its family's rule, and {type(model).__name__} "
                          f"({'model=module' if source.is_module else 'the transformed model'}) has none: "
                          f"cpu_fusion=graph (any traceable module) or false (eager)")
    if fusion == "ops" and lost:
        raise ConfigError(f"cpu_fusion=true rebuilds the model from its weights by its family's rule, which would "
                          f"not compute what model.transform={options.transform.target} made: {lost}; "
                          f"cpu_fusion=graph (traces the model as it runs) or false (eager)")
    if fusion == "graph" and not onednn_graph.available():
        fusion = "ops" if cpu_fusion.has_rule(model) and not lost else None
        print("cpu_fusion=graph: this PyTorch has no oneDNN Graph fuser; "
              + ("each convolution runs fused instead (cpu_fusion=true" if fusion else "the eager model runs "
                 f"(cpu_fusion=false{f', as fused ops would not compute the transformed model: {lost}' if lost else ''}")
              + ", recorded in the results)", file=sys.stderr)
    if fusion == "ops" and not cpu_fusion.available():
        fusion = None
        print("cpu_fusion: this PyTorch has no oneDNN fused convolution; the eager model runs "
              "(cpu_fusion=false, recorded in the results)", file=sys.stderr)
    if not isinstance(options.cuda_graphs, bool):
        raise ConfigError(f"cuda_graphs={options.cuda_graphs}: expected true or false")
    runtime = TorchRuntime(model, source.normalize, device, fusion, image_size, options.precision,
                           options.cuda_graphs)
    runtime.folded = bool(options.fold_bn) and not source.is_module  # a user's module runs as it is
    return runtime
