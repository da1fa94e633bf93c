"""Transforms of the exact model, as a user writes them (`model.transform=tests.transforms:NAME`)."""

from __future__ import annotations

import torch


def identity(model: torch.nn.Module) -> torch.nn.Module:
    return model


def bf16_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Every convolution's and linear layer's weights rounded to bfloat16 (computed in float32)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.copy_(m.weight.to(torch.bfloat16).float())
    return model


def noise(model: torch.nn.Module, layer: str, sigma: float, seed: int = 0) -> torch.nn.Module:
    """Gaussian noise of `sigma` times the weights' std added to one named layer's weights."""
    weight = model.get_submodule(layer).weight
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight.add_(torch.randn(weight.shape, generator=generator) * sigma * weight.std())
    return model


def wrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The same arithmetic inside a container: a module of no model family."""
    return torch.nn.Sequential(model)


def not_a_module(model: torch.nn.Module):
    return "a string"


def zero_channels(model: torch.nn.Module, layer: str, channels: int = 8) -> torch.nn.Module:
    """A forward hook on one named layer zeroing its first `channels` output channels: the layer's
    weights stay as they are, so only a path that runs the hook computes the change."""
    def hook(module, inputs, output):
        return output.index_fill(1, torch.arange(channels, device=output.device), 0.0)

    model.get_submodule(layer).register_forward_hook(hook)
    return model


def doubled(model: torch.nn.Module, layer: str) -> torch.nn.Module:
    """One named convolution swapped for a subclass whose own forward doubles its output."""
    conv = model.get_submodule(layer)

    class Doubled(type(conv)):
        def forward(self, x):
            return super().forward(x) * 2

    conv.__class__ = Doubled
    return model


def gelu(model: torch.nn.Module) -> torch.nn.Module:
    """Every ReLU and ReLU6 module made a GELU."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (torch.nn.ReLU, torch.nn.ReLU6)):
                setattr(parent, name, torch.nn.GELU())
    return model
