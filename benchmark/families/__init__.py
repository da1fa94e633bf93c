"""One record per model family: everything the harness knows about an architecture, in one place
that every command reads (the converter picks its TF and ONNX converters here, the CPU fusion its
rule, the target gate MLPerf's target, the bench and the tests their fixture and random-weight
builders, `python -m benchmark` its config).

A record names code as "package.module:attribute" and imports it only when asked (`Family.load`):
the target gate and a cache build read records without importing PyTorch or TensorFlow.

Adding a model family: its modules (the `nn.Module` and its spec in `benchmark/nn/`, a converter per
graph format in `benchmark/convert/`, optionally a fusion rule, a fixture graph and a random-weight
builder), its config `conf/model/<name>.yaml`, and one record in FAMILIES below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from preprocessing.errors import ConfigError


@dataclass(frozen=True)
class Family:
    name: str  # model.arch in its config
    title: str  # what MLPerf calls the model of this family it judges
    config: str  # conf/model/<config>.yaml: checkpoints, tensor names, normalisation, MLPerf's interpolation
    module: str | None = None  # the nn.Module class, built from its spec (its `from_spec` where it has one;
                               # None: the user's own factory)
    spec: str | None = None  # its spec dataclass (to_dict / from_dict: the weight cache's metadata)
    tf_converter: str | None = None  # FrozenGraph -> (spec, state dict)
    onnx_converter: str | None = None  # OnnxGraph (tf2onnx's form of MLPerf's graph) -> (spec, state dict)
    cpu_fusion: str | None = None  # (model, input sizes) -> model, each conv fused with its activation
    random_model: str | None = None  # (seed) -> MLPerf's architecture with seeded random weights (timing)
    fixture_graph: str | None = None  # (calibration inputs) -> a frozen graph of MLPerf's structure, random weights
    # MLPerf's FP32 reference top-1 (%) and the fraction of it a submission must reach (its checker's constants)
    target: tuple[float, float] | None = None
    bench_flag: str | None = None  # the bench's option naming a graph of this family (--mobilenet, --resnet)
    mlperf_interpolation: str | None = None  # OpenCV's interpolation in MLPerf's pipeline for it
    loadgen_name: str | None = None  # the model in MLPerf's LoadGen configs (mlperf.conf, user.conf)
    submission_benchmark: str | None = None  # the benchmark's folder in a submission (the checker's name)
    input_tensor: str | None = None  # MLPerf's graph's input, and its logits (before any softmax)
    logits_tensor: str | None = None
    onnx_outputs: tuple[str, ...] = ()  # the outputs MLPerf's tf2onnx conversion names (its heads)

    def load(self, field: str) -> Any:
        """The code a field names, imported now; an error where this family has none."""
        ref = getattr(self, field)
        if ref is None:
            raise ConfigError(f"model family {self.name} has no {field.replace('_', ' ')}")
        module, _, attribute = ref.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def has(self, field: str) -> bool:
        return getattr(self, field) is not None


FAMILIES = {f.name: f for f in [
    Family(
        name="mobilenet_v1", title="MobileNet-v1 1.0/224", config="mobilenet_v1",
        module="benchmark.nn.mobilenet_v1:MobileNetV1", spec="benchmark.nn.mobilenet_v1:MobileNetV1Spec",
        tf_converter="benchmark.convert.mobilenet_v1:convert_mobilenet_v1",
        onnx_converter="benchmark.convert.onnx:convert_mobilenet_v1_onnx",
        cpu_fusion="benchmark.nn.cpu_fusion:fuse_mobilenet_v1",
        random_model="benchmark.nn.mobilenet_v1:random_model",
        fixture_graph="benchmark.testing.graphs:mlperf_mobilenet_v1_graph",
        target=(71.68, 0.98), bench_flag="mobilenet", mlperf_interpolation="linear", loadgen_name="mobilenet",
        submission_benchmark="mobilenet", input_tensor="input:0", logits_tensor="MobilenetV1/Predictions/Reshape:0",
        onnx_outputs=("MobilenetV1/Predictions/Reshape_1:0",)),
    Family(
        name="resnet50", title="ResNet-50 v1.5", config="resnet50",
        module="benchmark.nn.resnet50:ResNet50", spec="benchmark.nn.resnet50:ResNetSpec",
        tf_converter="benchmark.convert.resnet50:convert_resnet50",
        onnx_converter="benchmark.convert.onnx:convert_resnet50_onnx",
        cpu_fusion="benchmark.nn.cpu_fusion:fuse_resnet50",
        random_model="benchmark.nn.resnet50:random_model",
        fixture_graph="benchmark.testing.graphs:build_resnet50_graph",
        target=(76.46, 0.99), bench_flag="resnet", mlperf_interpolation="area", loadgen_name="resnet50",
        submission_benchmark="resnet", input_tensor="input_tensor:0", logits_tensor="resnet_model/dense/BiasAdd:0",
        onnx_outputs=("ArgMax:0", "softmax_tensor:0")),
    # Any TF classifier: a frozen graph, a SavedModel or a Keras model file, converted node by node
    # (convert/graph.py); no MLPerf target, its tensors found in the graph or named by the config.
    # LoadGen reads MLPerf's image-classification settings for it (resnet50's in mlperf.conf); in a
    # submission's open division its folder is the user's (submission.benchmark=), mapped to resnet.
    Family(name="graph", title="a TensorFlow or Keras classifier", config="graph", loadgen_name="resnet50",
           module="benchmark.nn.graph:GraphModule", spec="benchmark.nn.graph:GraphSpec",
           cpu_fusion="benchmark.nn.cpu_fusion:fuse_graph"),
    # A user's torch.nn.Module (model.module=), with weights of its own; it stands for the MLPerf
    # family named by model.ports, whose target, preprocessing and exact model it is judged by.
    Family(name="module", title="your own module", config="module"),
]}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"model.arch={name}: no such model family; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def with_target() -> list[str]:
    """The families MLPerf judges, by name."""
    return sorted(n for n, f in FAMILIES.items() if f.target is not None)


def converted() -> list[str]:
    """The families the harness converts from MLPerf's graphs (the others bring their own module)."""
    return [n for n, f in FAMILIES.items() if f.has("tf_converter")]


def exported() -> list[str]:
    """The families benchmark.export writes: a module rebuilt from its spec (data) and weights."""
    return [n for n, f in FAMILIES.items() if f.has("module") and f.has("spec")]


def of_module(model) -> Family | None:
    """The family whose module class `model` is an instance of (None: a module of no family)."""
    for f in FAMILIES.values():
        if f.module is not None:
            module, _, name = f.module.partition(":")
            if any(c.__module__ == module and c.__qualname__ == name for c in type(model).__mro__):
                return f
    return None


def mlperf_departures(arch: str, settings) -> list[str]:
    """Where a pipeline (PipelineSettings, or a results file's preprocess dict) departs from MLPerf's
    own for the family `arch` (a converted family: a module's is the one it ports); [] where it is
    MLPerf's pipeline. The one predicate the tables' baseline, the target's reservations and the
    submission read."""
    from preprocessing.pipelines import mlperf_departures as departures

    return departures(settings, family(arch).mlperf_interpolation)


def judged_as(arch: str, ports: str | None = None) -> str:
    """The family whose MLPerf target, preprocessing and exact model a model of `arch` is judged by:
    its own, or for a user's module (arch "module") the family it `ports`."""
    if arch != "module":
        return family(arch).name
    if ports not in converted():
        raise ConfigError(f"model.ports={ports}: a module ports one of MLPerf's models: {', '.join(converted())}")
    return str(ports)
