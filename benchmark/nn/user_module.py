"""A user's own torch.nn.Module as the model (model=module): built by the factory `model.module=`
names (`torchvision.models:resnet50`, `mypkg.port:MobileNetV1`, with keyword arguments in Hydra's
`_target_` form), its weights loaded strictly from `model.checkpoint=`. A checkpoint never runs code:
`.safetensors`, or `.pt`/`.pth` through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmark.formats.checkpoint import WEIGHT_SUFFIXES, CheckpointError
from benchmark.nn.transform import Transform, load_callable
from preprocessing.errors import ConfigError


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; a `.pt` holding {"state_dict": ...} (as benchmark.export writes
    it, and many training scripts) is unwrapped."""
    if path.suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(f"{path}: a module's weights are .safetensors, .pt or .pth, "
                              f"not {path.suffix or 'no suffix'}")
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise many types; an unpickling refusal among them
        raise CheckpointError(f"{path}: not a readable weights file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict (names to tensors), found {type(state).__name__}")
    return state


def load_user_module(spec: Any, weights: Path) -> tuple[torch.nn.Module, Transform]:
    """The module the factory `spec` builds, every parameter and buffer assigned from `weights`
    (strict: none missing or extra), in eval mode; and the factory as recorded."""
    factory = load_callable(spec, "model.module")
    try:
        module = factory.function(**factory.kwargs)
    except Exception as e:
        raise ConfigError(f"model.module={factory.target}: building the module failed ({type(e).__name__}: {e})") from e
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"model.module={factory.target} returned {type(module).__name__}, not a torch.nn.Module")
    state = read_state_dict(weights)
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape
        raise CheckpointError(f"{weights}: does not fit model.module={factory.target}: "
                              f"{' '.join(str(e).split())[:300]}") from e
    if result.missing_keys or result.unexpected_keys:
        def few(keys):
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

        raise CheckpointError(f"{weights}: does not fit model.module={factory.target}: "
                              + "; ".join(f"{what}: {few(keys)}" for what, keys in
                                          (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
                                          if keys))
    return module.eval(), factory
