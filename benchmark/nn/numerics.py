"""The float32 arithmetic a forward runs with: TF32 tensor cores (CUDA), oneDNN's reduced-precision
float32 (CPU), cuDNN's algorithm choice. PyTorch keeps these as process-wide flags, so two runtimes
in one process (a precision= run and its exact fp32 model; LoadGen's runtime and the one it closes)
would overwrite each other's. Here each runtime's forward sets its flags on entry and restores the
caller's on exit (`applied`), and the flags are read inside the forward (`in_force`) so the results
record what ran, not what was asked. A CUDA graph recorded inside the context keeps the kernels (and
their math modes) chosen there.
"""

from __future__ import annotations

import contextlib

import torch


def wanted(precision: str, cudnn_benchmark: bool = False) -> dict:
    """The flags a precision runs with. Only tf32 lets float32 products use TF32; every other
    precision keeps float32 products in IEEE float32 on CUDA and CPU alike (a process-wide
    `torch.set_float32_matmul_precision("medium")` would otherwise run CPU matmuls in bfloat16),
    and cuDNN deterministic unless its benchmark mode is asked for (the CUDA bench's variant).
    PyTorch's legacy flag API only: reading one API after the other was set raises."""
    tf32 = precision == "tf32"
    return {"float32_matmul": "high" if tf32 else "highest", "cudnn_tf32": tf32,
            "cudnn_deterministic": not cudnn_benchmark, "cudnn_benchmark": bool(cudnn_benchmark)}


def _float32_matmul() -> str:
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:  # the process set PyTorch's newer per-backend API too: read CUDA's from it
        return {"tf32": "high", "bf16": "medium"}.get(torch.backends.cuda.matmul.fp32_precision, "highest")


def in_force() -> dict:
    """The flags as they are now, in `wanted`'s names."""
    cudnn = torch.backends.cudnn
    return {"float32_matmul": _float32_matmul(), "cudnn_tf32": bool(cudnn.allow_tf32),
            "cudnn_deterministic": bool(cudnn.deterministic), "cudnn_benchmark": bool(cudnn.benchmark)}


def _set(flags: dict) -> None:
    torch.set_float32_matmul_precision(flags["float32_matmul"])
    cudnn = torch.backends.cudnn
    cudnn.allow_tf32 = flags["cudnn_tf32"]
    cudnn.deterministic = flags["cudnn_deterministic"]
    cudnn.benchmark = flags["cudnn_benchmark"]


@contextlib.contextmanager
def applied(flags: dict):
    """`flags` (from `wanted`) in force inside, the caller's restored after (set only where they
    differ: a forward after a forward of the same precision sets nothing)."""
    before = in_force()
    if before == flags:
        yield
        return
    _set(flags)
    try:
        yield
    finally:
        _set(before)
