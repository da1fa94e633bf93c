"""Shared fixtures (helpers that are not fixtures live in tests/helpers.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import torchvision  # noqa: E402,F401  (before any test imports TensorFlow: the other order crashes)

from tests.helpers import GOLDEN, SAMPLES, crops, need, resnet_inputs  # noqa: E402


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return need(SAMPLES)


@pytest.fixture(scope="session")
def golden() -> dict:
    return json.loads(need(GOLDEN).read_text())["images"]


@pytest.fixture(scope="session")
def fixture_graphs(tmp_path_factory):
    """Builds 2018-form MobileNet-v1 frozen graphs on demand, once per test run."""
    from benchmark.evaluation.normalize import apply_table, lookup_table
    from benchmark.testing.graphs import build_mobilenet_v1_graph

    folder = tmp_path_factory.mktemp("graphs")
    built: dict = {}

    def get(multiplier: float, size: int, **kwargs) -> Path:
        key = (multiplier, size, tuple(sorted(kwargs.items())))
        if key not in built:
            calib = apply_table(lookup_table("mobilenet"), crops(16, size))
            path = folder / f"mobilenet_v1_{multiplier}_{size}_{len(built)}.pb"
            path.write_bytes(build_mobilenet_v1_graph(multiplier, size, calib, **kwargs))
            built[key] = path
        return built[key]

    return get


@pytest.fixture(scope="session")
def resnet_graphs(tmp_path_factory):
    """Builds MLPerf-form ResNet-50 frozen graphs on demand, once per test run."""
    from benchmark.testing.graphs import build_resnet50_graph

    folder = tmp_path_factory.mktemp("resnet")
    built: dict = {}

    def get(**kwargs) -> Path:
        key = tuple(sorted(kwargs.items()))
        if key not in built:
            path = folder / f"resnet50_v1_{len(built)}.pb"
            path.write_bytes(build_resnet50_graph(resnet_inputs(8, size=kwargs.get("image_size", 224)),
                                                  **kwargs))
            built[key] = path
        return built[key]

    return get

