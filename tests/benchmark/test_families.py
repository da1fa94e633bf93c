"""The model family records (benchmark/families): each names code that exists and does what the
record says, each config in conf/model/ has its record, and the commands read the records."""

from __future__ import annotations

import dataclasses

import pytest

from benchmark import conf
from benchmark.families import FAMILIES, Family, converted, family, of_module, with_target
from preprocessing.errors import ConfigError
from tests.helpers import REPO


def test_the_records():
    assert sorted(FAMILIES) == ["graph", "mobilenet_v1", "module", "resnet50"]
    assert converted() == ["mobilenet_v1", "resnet50"]
    assert with_target() == ["mobilenet_v1", "resnet50"]
    assert [f.bench_flag for f in FAMILIES.values()] == ["mobilenet", "resnet", None, None]  # the bench's options
    # every config of the model group is a family's, and says so in model.arch
    configs = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
    assert configs == sorted(f.config for f in FAMILIES.values())
    for f in FAMILIES.values():
        assert conf.load("model", f.config).arch == f.name
    # MLPerf's names and pipeline for each family it judges: the record's (the YAML is the user's view)
    assert {n: (f.loadgen_name, f.submission_benchmark, f.mlperf_interpolation) for n, f in FAMILIES.items()
            if f.target} == {"mobilenet_v1": ("mobilenet", "mobilenet", "linear"), "resnet50": ("resnet50", "resnet", "area")}
    for name in with_target():
        yaml, record = conf.load("model", name), family(name)
        assert (yaml.mlperf_interpolation, yaml.input_tensor, yaml.logits_tensor) == \
            (record.mlperf_interpolation, record.input_tensor, record.logits_tensor)


@pytest.mark.parametrize("name", converted())
def test_every_named_piece_of_a_converted_family_loads(name):
    f = family(name)
    for field in dataclasses.fields(Family):
        if isinstance(getattr(f, field.name), str) and ":" in getattr(f, field.name) and "tensor" not in field.name:
            assert callable(f.load(field.name)), field.name
    model = f.load("random_model")(seed=1)
    assert isinstance(model, f.load("module")) and of_module(model) is f
    assert type(model.spec) is f.load("spec") and model.spec.num_classes == 1001
    # the spec survives the weight cache's metadata round trip
    assert f.load("spec").from_dict(model.spec.to_dict()) == model.spec


def test_the_users_module_family_has_no_converted_pieces():
    f = family("module")
    assert not f.has("tf_converter") and f.target is None
    with pytest.raises(ConfigError, match="model family module has no cpu fusion"):
        f.load("cpu_fusion")
    with pytest.raises(ConfigError, match="model.arch=vgg16: no such model family; known: mobilenet_v1"):
        family("vgg16")


def test_the_target_gate_and_the_cpu_fusion_read_the_records(monkeypatch):
    import torch

    from benchmark.evaluation.gate import gate
    from benchmark.nn.cpu_fusion import fuse_for_cpu

    g = gate("resnet50", 76.0, 50_000)
    assert (g.reference, g.fraction) == (76.46, 0.99) and "ResNet-50 v1.5" in g.line()
    assert gate("module", 76.0, 50_000) is None
    with pytest.raises(ValueError, match="no fusion for Sequential"):
        fuse_for_cpu(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)), 8)
    # a record changed is what the gate and the fusion then do
    changed = {**FAMILIES, "resnet50": dataclasses.replace(FAMILIES["resnet50"], target=(80.0, 0.5),
                                                           cpu_fusion=None)}
    monkeypatch.setattr("benchmark.families.FAMILIES", changed)
    monkeypatch.setattr("benchmark.evaluation.gate.FAMILIES", changed)
    assert gate("resnet50", 41.0, 50_000).target == 40.0
    with pytest.raises(ValueError, match="no fusion for ResNet50"):
        fuse_for_cpu(changed["resnet50"].load("random_model")(), 64)
