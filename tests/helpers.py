"""Helpers shared by the tests: where the real data is (read in place from ../shared/data beside the
checkout, or $HARNESS_SHARED_DATA), crops and images to test with, and the tolerance of a conversion
against TensorFlow. Tests that need the real data skip with the reason when it is absent."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from preprocessing.dataset import imagenet_synsets

REPO = Path(__file__).resolve().parents[1]


# Commands run in subprocesses see the checkout's packages and no TensorFlow chatter.
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
SHARED = Path(os.environ.get("HARNESS_SHARED_DATA", REPO.parent / "shared" / "data"))


SAMPLES = SHARED / "imagenet-samples"


GOLDEN = SHARED / "golden" / "imagenet-samples-preprocess.json"


SLIM_2017 = SHARED / "models" / "tf-slim-frozen-2017"


# TF's and PyTorch's float32 kernels sum in different orders, so their logits differ by about the
# rounding error float32 itself makes on the same weights and inputs. That error is measured per
# model and batch as the distance of the PyTorch model from the same model run in float64. Over 64
# fixture graphs (MobileNet-v1: 4 shapes x 3 seeds; ResNet-50: full and small structures x 2 seeds;
# batch norms folded or not; real sample crops and synthetic images) |torch - TF| was 0.6 to 2.0
# times it. Synthetic images double the float32 error itself (and the logit range does not follow),
# which is why a fraction of the logit range measured on real crops failed on synthetic ones. A
# conversion fault (epsilon, padding, layout) is hundreds of times the tolerance (tested).
FLOAT32_NOISE_FACTOR = 4


def float32_noise(model, x) -> float:
    """max |model(x) - the same model in float64|: float32's own rounding error on `x` (NCHW)."""
    import copy

    import torch

    exact = copy.deepcopy(model).double()
    with torch.inference_mode():
        return float((model(x).double() - exact(x.double())).abs().max())


def tf_tolerance(model, x) -> float:
    """How far a right conversion's logits may be from TF's on the NCHW batch `x`."""
    return FLOAT32_NOISE_FACTOR * float32_noise(model, x)


def assert_same_predictions(got, expected, tol):
    """Logits within `tol` of TF's, and the same top-1 wherever the top two are further apart than
    the float noise (a closer pair may flip)."""
    diff = np.abs(got - expected).max()
    assert diff < tol, f"max |torch - tf| = {diff:.3g} >= {tol:.3g}"
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * tol
    assert clear.mean() > 0.9
    assert (got.argmax(1) == expected.argmax(1))[clear].all()


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (the ../shared/data folder beside the checkout)")
    return path


def slim_graph(size: int, form: str) -> Path:
    """Real TF-slim MobileNet-v1 0.25 graph: form 'pb' (extracted) or 'tgz' (the released archive)."""
    if form == "tgz":
        return need(SLIM_2017 / f"mobilenet_v1_0.25_{size}_frozen.tgz")
    return need(SLIM_2017 / f"mobilenet_v1_0.25_{size}" / "frozen_graph.pb")


def synthetic_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images (used when the real samples are absent)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC) for im in small])


def validation_images(n: int) -> list[tuple[str, int, bytes]]:
    """n images as ImageNet validation images: (ILSVRC2012_val_NNNNNNNN.JPEG name, label, JPEG bytes),
    in val_map order. The real sample images where present, each named after a validation image of
    its own class (so MLPerf's val_map labels it right); synthetic JPEGs of varied sizes otherwise."""
    import cv2

    from preprocessing.dataset import imagenet_val_map

    name_of = {}
    for name, label in imagenet_val_map().items():
        name_of.setdefault(label, name)  # the first validation image of each class
    if SAMPLES.exists():
        listed = [line.split() for line in (SAMPLES / "val_map.txt").read_text().splitlines()]
        chosen = listed[:: max(len(listed) // n, 1)][:n]
        images = [(name_of[int(label)], int(label), (SAMPLES / f).read_bytes()) for f, label in chosen]
    else:
        images = []
        for i, img in enumerate(synthetic_images(n, 200, seed=7)):
            label = (i * 997 // max(n, 1)) % 1000
            shape = (160 + 7 * i % 90, 240 - 5 * i % 80)  # varied sizes and aspect ratios
            ok, jpeg = cv2.imencode(".JPEG", cv2.resize(img, shape[::-1]))
            assert ok, "OpenCV could not encode a synthetic JPEG"
            images.append((name_of[label], label, jpeg.tobytes()))
    return sorted(images)


def crops(n: int, size: int, offset: int = 0, interpolation: str = "linear") -> np.ndarray:
    """n uint8 crops of real sample images (MLPerf pipeline), or synthetic ones."""
    from preprocessing.pipelines import crop, make_settings

    if not SAMPLES.exists():
        return synthetic_images(n, size, seed=offset)
    files = sorted(SAMPLES.glob("*.JPEG"))[offset * 7::7][:n]  # spread over the classes
    settings = make_settings("mlperf", size, interpolation)
    return np.stack([crop(f, settings) for f in files])


def resnet_inputs(n: int, offset: int = 0, size: int = 224) -> np.ndarray:
    """Real crops through MLPerf's ResNet-50 pipeline and normalisation (NHWC float32)."""
    from benchmark.evaluation.normalize import apply_table, lookup_table

    return apply_table(lookup_table("vgg"), crops(n, size, offset, interpolation="area"))


def write_layout(root, layout, images):
    """The images as `layout`: flat with val_map.txt, flat without it, <wnid>/<file>, or a tar of
    the flat files (members in the order given). Returns dataset.root."""
    synsets = imagenet_synsets()
    if layout == "tar":
        path = root / "ILSVRC2012_img_val.tar"
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
            for name, _, data in images:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path
    for name, label, data in images:
        folder = root / synsets[label] if layout == "imagefolder" else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    if layout == "val_map":
        (root / "val_map.txt").write_text("".join(f"{n} {label}\n" for n, label, _ in images))
    return root


SMALL_RESNET = {"width": 16, "depth": (1, 2, 1, 1)}  # MLPerf's structure, narrower and shallower: quick


def torch_model(pb, arch):
    """The frozen graph's conversion, batch norms folded."""
    from benchmark.convert import build_model, convert
    from benchmark.formats.checkpoint import open_checkpoint
    from benchmark.formats.frozen_graph import FrozenGraph
    from benchmark.nn.layers import fold_batch_norms

    spec, state = convert(arch, FrozenGraph.from_checkpoint(open_checkpoint(pb)))
    return fold_batch_norms(build_model(arch, spec, state)).eval()


def inputs(arch, size):
    """Six real crops (synthetic without the real data) as the model's float32 NHWC input."""
    from benchmark.evaluation.normalize import apply_table, lookup_table

    if arch == "resnet50":
        return resnet_inputs(6, size=size)
    return apply_table(lookup_table("mobilenet"), crops(6, size))


def config(*overrides, name: str = "config"):
    """A command's config as Hydra composes it from conf/ (progress bars off), for in-process runs."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("benchmark.conf", version_base="1.3"):
        return compose(name, overrides=["progress=false", *overrides])


def run_benchmark(*overrides) -> dict:
    """`python -m benchmark` with these overrides, run in this process (its command line, exit codes
    and output are tested through subprocesses in tests/benchmark/test_cli.py and test_install.py):
    the results JSON's content."""
    from benchmark.run import run

    return run(config(*overrides))


def varied(predictions) -> bool:
    """More than one class among `predictions`: only then can two runs' equal predictions fail to
    be equal (a random-weight model may answer one class for every image)."""
    return len({p for p in predictions if p is not None}) > 1
