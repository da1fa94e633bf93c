"""Conversion stage: frozen TF graph to a PyTorch module, converted once per checkpoint.

Converted weights are cached as safetensors keyed by the checkpoint's sha256 (and archive member
and converter version), with the architecture spec in the file's metadata.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from benchmark.families import FAMILIES, converted, exported
from benchmark.formats.checkpoint import Checkpoint, CheckpointError
from benchmark.formats.frozen_graph import FrozenGraph, GraphError
from preprocessing.files import write_atomically

# Bump when a converter's output changes, so that cached conversions are redone.
CONVERTER_VERSION = 3
EXPORT_FORMAT = "imagenet-mlperf-harness"  # metadata tag of models written by benchmark.export



def spec_from_dict(arch: str, d: dict):
    return FAMILIES[arch].load("spec").from_dict(d)


def build_model(arch: str, spec, state: dict) -> torch.nn.Module:
    """Instantiate `arch` from its spec and assign every parameter (strict: none missing or extra)."""
    module = FAMILIES[arch].load("module")
    model = getattr(module, "from_spec", module)(spec)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    return model.eval()


def weights_path(cache_dir: Path, arch: str, ckpt: Checkpoint) -> Path:
    member = hashlib.sha256((ckpt.member or "").encode()).hexdigest()[:8]
    return cache_dir / "weights" / f"{arch}-{ckpt.sha256}-{member}-v{CONVERTER_VERSION}.safetensors"


def convert(arch: str, graph):
    """(spec, state) of `arch` from a FrozenGraph or an OnnxGraph."""
    from benchmark.formats.onnx_graph import OnnxGraph

    if arch not in converted():
        raise ValueError(f"unknown architecture '{arch}'; known: {', '.join(converted())}")
    converter = FAMILIES[arch].load("onnx_converter" if isinstance(graph, OnnxGraph) else "tf_converter")
    try:
        return converter(graph)
    except GraphError as e:
        raise GraphError(f"{e} [the graph does not have the structure of model={arch}]") from e


def read_graph(ckpt: Checkpoint):
    """The checkpoint's graph: an OnnxGraph for an `.onnx`, else the TF frozen graph."""
    if ckpt.is_onnx:
        from benchmark.formats.onnx_graph import OnnxGraph

        return OnnxGraph.from_bytes(ckpt.graph_bytes, ckpt.source)
    return FrozenGraph.from_checkpoint(ckpt)


def load_converted(arch: str, ckpt: Checkpoint, graph: FrozenGraph | None,
                   cache_dir: Path | None) -> tuple[torch.nn.Module, dict]:
    """The converted model for `ckpt`, from the weight cache when present. Returns (model, info)."""
    path = weights_path(cache_dir, arch, ckpt) if cache_dir else None
    if path is not None and path.is_file():
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata()
            state = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("checkpoint_sha256") != ckpt.sha256 or meta.get("arch") != arch:
            raise ValueError(f"{path}: cached conversion does not belong to {ckpt.source}")
        spec = spec_from_dict(arch, json.loads(meta["spec"]))
        return build_model(arch, spec, state), {"weights_cache": str(path), "converted": False}
    if graph is None:
        graph = read_graph(ckpt)
    spec, state = convert(arch, graph)
    model = build_model(arch, spec, state)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"arch": arch, "checkpoint_sha256": ckpt.sha256, "checkpoint_member": ckpt.member or "",
                "converter_version": str(CONVERTER_VERSION), "spec": json.dumps(spec.to_dict())}
        write_atomically(path, lambda tmp: save_file(state, str(tmp), metadata=meta))  # never half-written
    return model, {"weights_cache": str(path) if path else None, "converted": True}


def load_exported(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """A model written by `python -m benchmark.export`, from its safetensors file."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if meta.get("format") != EXPORT_FORMAT or meta.get("arch") not in exported():
        raise CheckpointError(f"{path}: not a model exported by benchmark.export (no harness metadata)")
    spec = spec_from_dict(meta["arch"], json.loads(meta["spec"]))
    return build_model(meta["arch"], spec, state), meta
