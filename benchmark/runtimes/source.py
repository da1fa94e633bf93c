"""Model stage: the checkpoint a config names, and each form of the model a runtime runs (the TF
frozen graph, the ONNX graph, the converted PyTorch module), each made when a runtime first asks
for it: TensorFlow is imported only when it runs (importing it slows PyTorch's CPU kernels down by
about a fifth), and a model is converted only when PyTorch runs it."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from benchmark.evaluation.normalize import Normalizer
from benchmark.formats.checkpoint import WEIGHT_SUFFIXES, Checkpoint, CheckpointError, file_digest, open_checkpoint
from benchmark.formats.download import fetch, is_url
from preprocessing.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """The config's model group (conf/model/<name>.yaml and its overrides), resolved once by the
    command (`from_config`): the user's view of the model, which the family record's facts back."""
    name: str
    arch: str
    normalization: str
    checkpoint: str | None = None  # a file or a URL (None: not set)
    download_url: str | None = None
    download_md5: str | None = None
    published_md5: tuple[str, ...] = ()
    onnx_urls: tuple[str, ...] = ()
    image_size: int | None = None  # None: the graph's own
    input_tensor: str | None = None
    logits_tensor: str | None = None
    mlperf_interpolation: str | None = None
    module: Any = None  # model=module: the user's factory (package.module:callable, or a _target_ mapping)
    ports: str | None = None  # model=module: the MLPerf family it ports
    classes: int | None = None  # model=module: 1000 or 1001 outputs (None: read off the output)

    @classmethod
    def from_config(cls, model) -> "ModelSpec":
        from omegaconf import OmegaConf

        m = OmegaConf.to_container(model, resolve=True, throw_on_missing=False)

        def value(key):
            v = m.get(key)
            return None if v == "???" else v
        return cls(str(m["name"]), str(m["arch"]), str(m["normalization"]), value("checkpoint"), value("download_url"),
                   value("download_md5"), tuple(str(x) for x in m.get("published_md5") or ()),
                   tuple(str(u) for u in (m.get("onnx_urls") or {}).values()),
                   None if value("image_size") is None else int(m["image_size"]), value("input_tensor"),
                   value("logits_tensor"), value("mlperf_interpolation"), value("module"), value("ports"),
                   None if value("classes") is None else int(m["classes"]))


def open_model_checkpoint(model: ModelSpec, checkpoint_dir: Path, progress: bool = True) -> Checkpoint:
    """The checkpoint named by model.checkpoint: a local file, or a URL downloaded (once) into
    `checkpoint_dir`. The model's published md5 applies to its own download URL."""
    source = model.checkpoint
    if source is None:
        hint = f" (the model's download URL is {model.download_url})" if model.download_url else ""
        raise ConfigError(f"model.checkpoint is not set{hint}")
    if is_url(source):
        md5 = model.download_md5 if source == model.download_url else None
        source = fetch(source, checkpoint_dir, md5, progress)
    # PyTorch weights: a model written by benchmark.export, or a user's module's (model=module)
    if str(source).endswith(".safetensors") or (model.arch == "module" and str(source).endswith(WEIGHT_SUFFIXES)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file not found")
        return Checkpoint(path, file_digest(path), None, b"")
    if model.arch == "module":
        raise CheckpointError(f"{source}: model=module takes the module's weights (.safetensors, .pt or .pth); "
                              f"MLPerf's checkpoint it ports is reference_checkpoint=")
    from benchmark.formats.keras import is_keras, open_keras

    if model.arch == "graph" and is_keras(source):  # frozen through TensorFlow, then read as any graph
        return open_keras(source, model.image_size)
    return open_checkpoint(source)


def is_mlperfs(model: ModelSpec, ckpt: Checkpoint | Path | None) -> bool:
    """Is the checkpoint one MLPerf publishes for `model`: fetched from one of its URLs (the
    download checks the published md5, or the sha256 of the first download), or a file (`ckpt`: the
    opened checkpoint or its path; None: not fetched yet) of one of its published md5s."""
    urls = {model.download_url, *model.onnx_urls} - {None}
    if str(model.checkpoint) in urls:
        return True
    path = ckpt.path if isinstance(ckpt, Checkpoint) else ckpt
    published = {m.lower() for m in model.published_md5}
    return bool(published) and path is not None and Path(path).is_file() and file_digest(Path(path), "md5") in published


@dataclass
class ModelSource:
    """One checkpoint of one model (`model`: the config's model group, resolved: arch, tensor names,
    normalisation), with the converted-weight cache in `weights_dir`."""
    ckpt: Checkpoint
    model: ModelSpec
    weights_dir: Path | None
    timing: dict = field(default_factory=dict)  # checkpoint_s (reading graphs), convert_s
    conversion: dict | None = None  # how the PyTorch module was made (results JSON)
    _torch: dict = field(default_factory=dict)

    @property
    def is_module(self) -> bool:
        """A user's own module (model=module): its weights, no graph."""
        return self.model.arch == "module"

    @property
    def exported(self) -> bool:
        """A model written by benchmark.export: PyTorch weights, no graph."""
        return self.ckpt.path.suffix == ".safetensors" and not self.is_module

    @property
    def normalize(self) -> Normalizer:
        return Normalizer(self.model.normalization)

    def resolve_size(self, graph_size: int | None) -> int:
        """The graph's input size wins; a configured model.image_size that contradicts it is an error."""
        configured = self.model.image_size
        if graph_size is not None:
            if configured is not None and int(configured) != graph_size:
                raise ConfigError(f"model.image_size={configured} but {self.ckpt.source} fixes its input to "
                                  f"{graph_size}x{graph_size}")
            return int(graph_size)
        if configured is None:
            raise ConfigError(f"{self.ckpt.source} leaves the input size open: set model.image_size")
        return int(configured)

    def timed(self, key: str, make):
        clock = time.perf_counter()
        value = make()
        self.timing[key] = round((self.timing.get(key) or 0.0) + time.perf_counter() - clock, 3)
        return value

    @cached_property
    def frozen_graph(self):
        """The TF frozen graph (read with TensorFlow's protobufs)."""
        from benchmark.formats.frozen_graph import FrozenGraph

        return self.timed("checkpoint_s", lambda: FrozenGraph.from_checkpoint(self.ckpt))

    @cached_property
    def onnx_graph(self):
        from benchmark.formats.onnx_graph import OnnxGraph

        return self.timed("checkpoint_s", lambda: OnnxGraph.from_bytes(self.ckpt.graph_bytes, self.ckpt.source))

    @cached_property
    def tensors(self) -> tuple[str, str]:
        """The graph's input and logits tensors: the config's, or for model=graph where it names none,
        the graph's one placeholder and its final op before a trailing Softmax or ArgMax."""
        m = self.model
        if m.arch != "graph" or (m.input_tensor and m.logits_tensor):
            return m.input_tensor, m.logits_tensor
        from benchmark.convert.graph import graph_tensors

        return graph_tensors(self.frozen_graph, m.input_tensor, m.logits_tensor)

    def graph(self):
        """The checkpoint's own graph, ONNX or frozen."""
        if self.is_module:
            raise ConfigError(f"model=module runs your module in PyTorch (backend=torch); {self.ckpt.path} holds "
                              f"weights, no graph")
        return self.onnx_graph if self.ckpt.is_onnx else self.frozen_graph

    def torch_model(self, fold_bn: bool = True):
        """The converted PyTorch module (from the weight cache when there), batch norms folded or
        in the graph's order. A new module on each call with other settings; the same one otherwise."""
        from benchmark.convert import weights_path

        if self.is_module:  # the user's module as it is: its batch norms are its own to fold
            fold_bn = False
        if fold_bn in self._torch:
            return self._torch[fold_bn]
        cached = self.is_module or self.exported or (self.weights_dir is not None
                                   and weights_path(self.weights_dir, self.model.arch, self.ckpt).is_file())
        graph = None if cached else self.graph()  # read once, for TensorFlow too (timed as checkpoint_s)
        self._torch[fold_bn] = model = self.timed("convert_s", lambda: self._convert(fold_bn, graph))
        return model

    def _convert(self, fold_bn: bool, graph):
        from benchmark.convert import load_converted, load_exported
        from benchmark.nn.layers import fold_batch_norms

        if self.is_module:
            from benchmark.nn.user_module import load_user_module

            model, factory = load_user_module(self.model.module, self.ckpt.path)
            self.conversion = {"module": factory.to_dict(), "ports": str(self.model.ports)}
            return model
        if self.model.arch == "graph" and not self.exported:  # node by node, no weight cache: seconds
            from benchmark.convert.graph import convert_graph

            inp, _ = self.tensors
            c = convert_graph(graph.graph_def, self.ckpt.source, inp.split(":")[0], self.model.logits_tensor, fold_bn)
            self.conversion = {"converter": "graph", "input": c.input, "logits": c.output, "notes": c.notes,
                               "nodes": len(c.module.steps)}
            for note in c.notes:
                print(f"model=graph: {note}", file=sys.stderr)
            return c.module
        if self.exported:
            model, meta = load_exported(self.ckpt.path)
            if meta["arch"] != self.model.arch:
                raise ConfigError(f"{self.ckpt.path} holds {meta['arch']}, not model={self.model.name}")
            conversion = {"exported_from": meta["checkpoint"], "exported_from_sha256": meta["checkpoint_sha256"]}
        else:
            model, conversion = load_converted(self.model.arch, self.ckpt, graph, self.weights_dir)
        self.conversion = {**(self.conversion or {}), **conversion}
        if fold_bn and self.model.arch == "graph":
            from benchmark.convert.graph import fold_graph

            return fold_graph(model)
        return fold_batch_norms(model) if fold_bn else model
