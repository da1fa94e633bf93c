"""A user's transform of the exact model (`model.transform=`): a Python callable that receives a copy
of the converted model and returns the module to evaluate (weights rounded to another format, a
pruned layer, a fault injected, a new activation). The run then reports the transformed model
against the exact one, image by image, as a `precision=` run does.

Named as `package.module:function` (or Hydra's dotted `_target_`), with keyword arguments in Hydra's
usual form: `model.transform={_target_: mypkg.faults:noise, layer: conv1, sigma: 0.01}`. The results
record the import path, the arguments and the sha256 of the callable's source file, so runs of
different transforms (or of a changed one) are told apart.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from preprocessing.errors import ConfigError


@dataclass(frozen=True)
class Transform:
    target: str  # package.module:function
    kwargs: dict = field(default_factory=dict)
    function: Callable | None = field(default=None, compare=False, repr=False)
    source_file: str | None = None
    source_sha256: str | None = None

    def apply(self, model):
        """The transformed module, made from a copy of `model` (the exact model stays as it is)."""
        import torch

        out = self.function(copy.deepcopy(model), **self.kwargs)
        if not isinstance(out, torch.nn.Module):
            raise ConfigError(f"model.transform={self.target} returned {type(out).__name__}, not a torch.nn.Module")
        return out.eval()

    def to_dict(self) -> dict:
        return {"target": self.target, "kwargs": self.kwargs, "source_file": self.source_file,
                "source_sha256": self.source_sha256}


def _split(spec: str, key: str) -> tuple[str, str]:
    if ":" in spec:
        module, _, name = spec.partition(":")
    else:
        module, _, name = spec.rpartition(".")
    if not module or not name:
        raise ConfigError(f"{key}={spec}: expected package.module:function")
    return module, name


def load_callable(spec: Any, key: str) -> Transform:
    """A callable named in the config at `key` (`package.module:function`, or a mapping with
    `_target_` and keyword arguments), imported, with its source file's sha256; a clear error for one
    that cannot be imported or called."""
    if isinstance(spec, str):
        target, kwargs = spec, {}
    else:
        from omegaconf import DictConfig, OmegaConf

        spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
        if "_target_" not in spec:
            raise ConfigError(f"{key}={spec}: a mapping needs _target_ (package.module:function)")
        target, kwargs = str(spec.pop("_target_")), spec
    module_name, name = _split(target, key)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{key}={target}: cannot import {module_name} ({e})") from e
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"{key}={target}: {module_name} has no callable {name}")
    try:
        source = inspect.getsourcefile(function)
    except TypeError:  # a built-in: no source file
        source = None
    digest = hashlib.sha256(open(source, "rb").read()).hexdigest() if source else None
    return Transform(f"{module_name}:{name}", kwargs, function, source, digest)


def load_transform(spec: Any) -> Transform | None:
    """The config's model.transform (null, `package.module:function`, or a mapping with `_target_` and
    keyword arguments) as a Transform."""
    return None if spec is None else load_callable(spec, "model.transform")
