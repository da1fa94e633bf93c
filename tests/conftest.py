"""Shared fixtures (helpers that are not fixtures live in tests/helpers.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Each xdist worker (and what it starts) gets its share of the cores: two workers each running two
# OpenMP and TensorFlow threads on two cores spin-wait against each other (29 % more CPU time on
# test_onnx and test_cli). Set before torch or TensorFlow is imported: both read these once.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    _SHARE = str(max(1, _CORES // _WORKERS))
    for _var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_var, _SHARE)
import torchvision  # noqa: E402,F401  (before any test imports TensorFlow: the other order crashes)

from tests import helpers  # noqa: E402
from tests.helpers import GOLDEN, SAMPLES, made_once, need, shared_folder, synthetic_images  # noqa: E402

# The tests that depend on the shared data (they looked at it through helpers.has or need, or use a
# fixture that did), written to $HARNESS_SHARED_USERS.<worker> at the end of the session: CI's second
# pass runs only these without the data, as a user's clone has none.
LOOKING_FIXTURES: set[str] = set()
USERS: list[str] = []
_SHARED = os.path.abspath(helpers.SHARED)


def _reads_shared(event: str, args: tuple) -> None:
    """A file or folder of the shared data opened or listed any other way is noted too."""
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, os.PathLike)):
        path = os.path.abspath(os.fspath(args[0]))
        if path == _SHARED or path.startswith(_SHARED + os.sep):
            helpers.LOOKED[0] = True


sys.addaudithook(_reads_shared)


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    before, helpers.LOOKED[0] = helpers.LOOKED[0], False
    yield
    if helpers.LOOKED[0]:
        LOOKING_FIXTURES.add(fixturedef.argname)
    helpers.LOOKED[0] = helpers.LOOKED[0] or before


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    helpers.LOOKED[0] = False
    yield
    if helpers.LOOKED[0] or LOOKING_FIXTURES.intersection(item.fixturenames):
        USERS.append(item.nodeid)


def pytest_sessionfinish(session):
    out = os.environ.get("HARNESS_SHARED_USERS")
    if out and USERS:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        Path(f"{out}.{worker}").write_text("".join(f"{nodeid}\n" for nodeid in USERS))


@pytest.fixture(scope="session", autouse=True)
def _shared_float64_references(tmp_path_factory):
    """TensorFlow's float64 references (helpers.tf_float64_logits, the slowest runs of the ResNet-50
    tests) made once for both xdist workers."""
    helpers.FLOAT64_DIR[0] = shared_folder(tmp_path_factory, "float64")
    yield
    helpers.FLOAT64_DIR[0] = None


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return need(SAMPLES)


@pytest.fixture(scope="session")
def golden() -> dict:
    return json.loads(need(GOLDEN).read_text())["images"]


def _key(kwargs: dict) -> str:
    """A name for a build's options that is safe in a Hydra override (no '=', ',' or brackets)."""
    import hashlib

    return hashlib.sha256(repr(sorted(kwargs.items())).encode()).hexdigest()[:12] if kwargs else "default"


@pytest.fixture(scope="session")
def fixture_graphs(tmp_path_factory):
    """Builds 2018-form MobileNet-v1 frozen graphs on demand, once per test run (their batch norms
    calibrated on synthetic crops: the same graphs with or without the shared data; seeded, so
    the same bytes whichever worker builds them)."""
    from benchmark.evaluation.normalize import apply_table, lookup_table
    from benchmark.testing.graphs import build_mobilenet_v1_graph

    folder = shared_folder(tmp_path_factory, "graphs")

    def get(multiplier: float, size: int, **kwargs) -> Path:
        def make(tmp):
            calib = apply_table(lookup_table("mobilenet"), synthetic_images(16, size))
            tmp.write_bytes(build_mobilenet_v1_graph(multiplier, size, calib, **kwargs))

        return made_once(folder / f"mobilenet_v1_{multiplier}_{size}_{_key(kwargs)}.pb", make)

    return get


@pytest.fixture(scope="session")
def resnet_graphs(tmp_path_factory):
    """Builds MLPerf-form ResNet-50 frozen graphs on demand, once per test run (calibrated on
    synthetic crops, as above)."""
    from benchmark.evaluation.normalize import apply_table, lookup_table
    from benchmark.testing.graphs import build_resnet50_graph

    folder = shared_folder(tmp_path_factory, "resnet")

    def get(**kwargs) -> Path:
        def make(tmp):
            calib = apply_table(lookup_table("vgg"), synthetic_images(8, kwargs.get("image_size", 224)))
            tmp.write_bytes(build_resnet50_graph(calib, **kwargs))

        return made_once(folder / f"resnet50_v1_{_key(kwargs)}.pb", make)

    return get

