"""The Hydra configs of every command, shipped inside the package (`pkg://benchmark.conf`): the
entry points find them wherever the harness is installed, and `hydra.searchpath` or `--config-dir`
adds a user's own."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import Any

from omegaconf import DictConfig, OmegaConf

SEARCH_PATH = "pkg://benchmark.conf"


def load(group: str, name: str) -> DictConfig:
    """One option of a config group as written (interpolations unresolved), e.g. load("model", "resnet50")."""
    resource = files(__name__).joinpath(group, f"{name}.yaml")
    if not resource.is_file():
        raise FileNotFoundError(f"no config {group}/{name}.yaml in {SEARCH_PATH}")
    return OmegaConf.create(resource.read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _model(name: str) -> dict:
    """A shipped model config, resolved (read once: OmegaConf resolves an interpolation at every access)."""
    return OmegaConf.to_container(load("model", name), resolve=True)


def _ported(key: str, _root_: DictConfig) -> Any:
    """`${ported:key}` in conf/model/module.yaml: the value of `key` in the config of the MLPerf model
    the user's module ports (model.ports), e.g. its normalisation and MLPerf's interpolation for it."""
    return _model(str(_root_.model.ports))[key]


OmegaConf.register_new_resolver("ported", _ported, replace=True)
