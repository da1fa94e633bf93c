"""python -m benchmark.export model=... model.checkpoint=... out=model.safetensors [torchvision=true]

Writes the converted PyTorch model as safetensors (with its architecture and provenance in the
metadata; for model=graph the spec lists every node, its settings and inputs: data that rebuilds the
module, no code) and as a `.pt` state dict; with `torchvision=true` (ResNet-50), also a 1000-class state
dict that loads into stock `torchvision.models.resnet50()`. Loading never unpickles: safetensors, or
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from benchmark.convert import CONVERTER_VERSION, EXPORT_FORMAT, load_exported  # noqa: F401  (load_exported: public here too)
from benchmark.formats.checkpoint import Checkpoint
from preprocessing.files import write_atomically

CLASSES = "1001 outputs: index 0 is background, index k is ImageNet class k-1 (sorted synsets)"
GRAPH_CLASSES = "the graph's own outputs: 1001 (index 0 background) or 1000 (index k: the k-th sorted synset)"


def export(model: torch.nn.Module, arch: str, ckpt: Checkpoint, out: Path, extra: dict) -> list[Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"format": EXPORT_FORMAT, "arch": arch, "spec": json.dumps(model.spec.to_dict()),
            "checkpoint": str(ckpt.path), "checkpoint_member": ckpt.member or "",
            "checkpoint_sha256": ckpt.sha256, "converter_version": str(CONVERTER_VERSION),
            "classes": GRAPH_CLASSES if arch == "graph" else CLASSES, **{k: str(v) for k, v in extra.items()}}
    written = [out, out.with_suffix(".pt")]
    write_atomically(out, lambda tmp: save_file(state, str(tmp), metadata=meta))
    write_atomically(written[1], lambda tmp: torch.save({"state_dict": state, "metadata": meta}, tmp))
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


@hydra.main(version_base="1.3", config_path="pkg://benchmark.conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from preprocessing.errors import exit_on_user_error

    for path in exit_on_user_error(lambda: export_command(cfg)):
        print(path)


def export_command(cfg: DictConfig) -> list[Path]:
    from benchmark.run import model_source
    from benchmark.spec import RunSpec
    from preprocessing.errors import ConfigError

    if not cfg.out:
        raise ConfigError("out is not set: out=/path/to/model.safetensors")
    out = Path(cfg.out).expanduser()
    if out.suffix != ".safetensors":
        raise ConfigError(f"out={out}: expected a .safetensors path")
    if cfg.torchvision and cfg.model.arch != "resnet50":
        raise ConfigError("torchvision=true is for model=resnet50")
    spec = RunSpec.from_config(cfg, images=False)  # the config read here, once
    source = model_source(spec.model, spec.checkpoint_dir, spec.cache_folder, spec.progress)
    model = source.torch_model(fold_bn=False)
    written = export(model, cfg.model.arch, source.ckpt, out,
                     {"model": cfg.model.name, "normalization": cfg.model.normalization})
    if cfg.torchvision:
        tv = out.with_suffix(".torchvision.pth")
        write_atomically(tv, lambda tmp: torch.save(torchvision_state_dict(model), tmp))
        written.append(tv)
    return written


if __name__ == "__main__":
    main()
