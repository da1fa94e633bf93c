"""The converted model in PyTorch, on CPU or CUDA: the harness's own runtime (backend=torch)."""

from __future__ import annotations

import ctypes

import numpy as np
import torch

from benchmark.evaluation.normalize import Normalizer, TorchNormalizer
from preprocessing.errors import ConfigError


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} asked for, but PyTorch sees no CUDA device")
    return torch.device(name)


def exact_cuda() -> None:
    """TF32 changes results at the last digit and cuDNN may pick non-deterministic kernels: off."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


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


class TorchRuntime:
    """The converted model on its device: cached crops to input tensors, input tensors to logits.
    `fuse`: on CPU, the model with each convolution fused with its activation through oneDNN
    (nn/cpu_fusion.py), made at the first batch's input size."""
    name = "torch"

    def __init__(self, model: torch.nn.Module, normalize: Normalizer, device: torch.device | str,
                 fuse: bool = False, image_size: int | None = None):
        device = torch.device(device)
        if device.type == "cuda":
            exact_cuda()
        else:
            reuse_freed_memory()
        # Channels-last: the cached crops are NHWC already, and oneDNN's convolutions are fastest there.
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.normalize, self.torch_device, self.device = normalize, device, str(device)
        self.image_size = image_size
        self.to_input = TorchNormalizer(normalize, device)
        self.fuse = fuse and device.type == "cpu"
        self.fused: torch.nn.Module | None = None

    def inputs(self, batch: np.ndarray) -> torch.Tensor:
        """A batch of cached crops (NHWC) as MLPerf's exact float32 input, NCHW (channels-last)."""
        with torch.inference_mode():
            if batch.dtype == np.uint8:
                # uint8 crosses to the device, where MLPerf's exact float32 input is made.
                return self.to_input(torch.from_numpy(batch).to(self.torch_device))
            return torch.from_numpy(self.normalize(batch)).to(self.torch_device).permute(0, 3, 1, 2)

    def take(self, inputs: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Rows gathered in NHWC memory order, so the batch has the layout `inputs` gives."""
        with torch.inference_mode():
            index = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(inputs.device)
            return inputs.permute(0, 2, 3, 1).index_select(0, index).permute(0, 3, 1, 2)

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            if self.fuse and self.fused is None:
                from benchmark.nn.cpu_fusion import fuse_for_cpu

                self.fused = fuse_for_cpu(self.model, x.shape[-1])
            model = self.fused if self.fused is not None else self.model
            return model(x).float().cpu().numpy()

    def close(self) -> None:
        pass


def create(source, options) -> TorchRuntime:
    """backend=torch: the checkpoint converted (or an export loaded); oneDNN-fused on CPU."""
    from benchmark.nn import cpu_fusion

    if options.role != "backend":
        raise ConfigError(f"{options.role}=torch: the torch backend is what a reference is compared with")
    if source.ckpt.is_onnx and not options.fold_bn:
        raise ConfigError(f"fold_bn=false: {source.ckpt.path} is an ONNX model, whose batch norms tf2onnx has "
                          f"folded into the convolutions; it converts to the folded model only")
    if options.threads:
        torch.set_num_threads(int(options.threads))
    device = select_device(options.device)
    model = source.torch_model(options.fold_bn)
    fuse = device.type == "cpu" and options.fold_bn and options.cpu_fusion and cpu_fusion.available()
    return TorchRuntime(model, source.normalize, device, fuse, source.resolve_size(model.spec.image_size))
