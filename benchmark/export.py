"""python -m benchmark.export model=... model.checkpoint=... out=model.safetensors [torchvision=true]

Writes the converted PyTorch model as safetensors (with its architecture and provenance in the
metadata) and as a `.pt` state dict; with `torchvision=true` (ResNet-50), also a 1000-class state
dict that loads into stock `torchvision.models.resnet50()`. Loading never unpickles: safetensors, or
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from .checkpoint import Checkpoint
from .convert import CONVERTER_VERSION, EXPORT_FORMAT, load_exported  # noqa: F401  (load_exported: public here too)

CLASSES = "1001 outputs: index 0 is background, index k is ImageNet class k-1 (sorted synsets)"


def export(model: torch.nn.Module, arch: str, ckpt: Checkpoint, out: Path, extra: dict) -> list[Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"format": EXPORT_FORMAT, "arch": arch, "spec": json.dumps(model.spec.to_dict()),
            "checkpoint": str(ckpt.path), "checkpoint_member": ckpt.member or "",
            "checkpoint_sha256": ckpt.sha256, "converter_version": str(CONVERTER_VERSION),
            "classes": CLASSES, **{k: str(v) for k, v in extra.items()}}
    written = [out, out.with_suffix(".pt")]
    _atomic(out, lambda tmp: save_file(state, str(tmp), metadata=meta))
    _atomic(written[1], lambda tmp: torch.save({"state_dict": state, "metadata": meta}, tmp))
    return written


def torchvision_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """ResNet-50 weights for stock torchvision `resnet50()`: 1000 classes (the background row
    dropped) and the BN counters torchvision expects. Stock torchvision pads its max pool (1, 1)
    and uses BN epsilon 1e-5, so it computes something slightly different (see the README)."""
    if model.spec.num_classes != 1001 or not hasattr(model, "fc"):
        raise ValueError("torchvision=true exports ResNet-50 with 1001 outputs only")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][1:].contiguous(), state["fc.bias"][1:].contiguous()
    for key in [k for k in state if k.endswith(".running_var")]:
        state[key[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0)
    return state


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


@hydra.main(version_base="1.3", config_path="pkg://benchmark.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from .convert import load_converted
    from .errors import USER_ERRORS, ConfigError
    from .run import cache_dir, model_checkpoint

    try:
        if not cfg.out:
            raise ConfigError("out is not set: out=/path/to/model.safetensors")
        out = Path(cfg.out).expanduser()
        if out.suffix != ".safetensors":
            raise ConfigError(f"out={out}: expected a .safetensors path")
        ckpt = model_checkpoint(cfg)
        model, _ = load_converted(cfg.model.arch, ckpt, None, cache_dir(cfg))
        written = export(model, cfg.model.arch, ckpt, out,
                         {"model": cfg.model.name, "normalization": cfg.model.normalization})
        if cfg.torchvision:
            if cfg.model.arch != "resnet50":
                raise ConfigError("torchvision=true is for model=resnet50")
            tv = out.with_suffix(".torchvision.pth")
            _atomic(tv, lambda tmp: torch.save(torchvision_state_dict(model), tmp))
            written.append(tv)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
