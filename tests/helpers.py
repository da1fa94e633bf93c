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

from benchmark.families import family, with_target
from preprocessing.dataset import imagenet_synsets

REPO = Path(__file__).resolve().parents[1]


# Commands run in subprocesses see the checkout's packages and no TensorFlow chatter.
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
SHARED = Path(os.environ.get("HARNESS_SHARED_DATA", REPO.parent / "shared" / "data"))


SAMPLES = SHARED / "imagenet-samples"


GOLDEN = SHARED / "golden" / "imagenet-samples-preprocess.json"


SLIM_2017 = SHARED / "models" / "tf-slim-frozen-2017"


# TF's and PyTorch's float32 kernels sum in different orders, so their logits differ by about the
# rounding error float32 itself makes. The tolerance is measured on TensorFlow alone, independent of
# the output under test: FACTOR times TF's own float32 error, max |TF float32 - the same graph run by
# TF in float64| on the same batch (tf_float64_logits). Over the fixture graphs (MobileNet-v1 2018
# form at 0.25/128, 0.5/193, 0.75/160, 1.0/224; ResNet-50 full, small, NCHW, FusedBatchNormV3), the
# real 2017 graphs (0.25/128, 0.25/224), real crops and synthetic images, batch norms folded or not,
# |torch - TF float32| was 0.66 to 1.70 times it, and |torch - TF float64| 0.71 to 1.59 times it (44
# cases, this session). A conversion fault is hundreds of times the tolerance (tested).
FLOAT32_NOISE_FACTOR = 4

# MLPerf's graphs' input and logits tensors, as their family records hold them
TENSORS = {name: (family(name).input_tensor, family(name).logits_tensor) for name in with_target()}


def tf_logits(pb: Path, arch: str, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """The frozen graph's own float32 logits on the NHWC batch `x`, in TensorFlow."""
    from benchmark.formats.checkpoint import open_checkpoint
    from benchmark.formats.frozen_graph import FrozenGraph
    from benchmark.runtimes.tf import TFGraphModel

    return TFGraphModel(FrozenGraph.from_checkpoint(open_checkpoint(pb)), *TENSORS[arch], x.shape[1], threads)(x)


def tf_tolerance(pb: Path, arch: str, x: np.ndarray, tf32: np.ndarray | None = None) -> float:
    """How far a right conversion's logits may be from TF's on the NHWC batch `x`: FACTOR times TF's
    own float32 error there (`tf32`: TF's float32 logits, when already computed)."""
    inp, logits = TENSORS[arch]
    if tf32 is None:
        tf32 = tf_logits(pb, arch, x)
    error = float(np.abs(tf32.astype(np.float64) - tf_float64_logits(Path(pb), inp, logits, x)).max())
    assert error > 0, "TF's float32 logits equal its float64 ones: no error to scale"
    return FLOAT32_NOISE_FACTOR * error


def assert_same_predictions(got, expected, tol):
    """Logits within `tol` of TF's, and the same top-1 wherever the top two are further apart than
    the float noise (a closer pair may flip)."""
    diff = np.abs(got - expected).max()
    assert diff < tol, f"max |torch - tf| = {diff:.3g} >= {tol:.3g}"
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * tol
    assert clear.mean() > 0.9
    assert (got.argmax(1) == expected.argmax(1))[clear].all()


# Which tests depend on the shared data: every look at it goes through `has` (or `need`), which notes
# it; tests/conftest.py lists the tests (and fixtures) that looked, and CI's second pass runs only
# those without the data (the others behave the same either way).
LOOKED = [False]


def has(path: Path) -> bool:
    """Is this part of the shared data present (noted: the running test depends on it)."""
    LOOKED[0] = True
    return path.exists()


def need(path: Path) -> Path:
    if not has(path):
        pytest.skip(f"real test data not found at {path} (the ../shared/data folder beside the checkout)")
    return path


def slim_graph(size: int, form: str) -> Path:
    """Real TF-slim MobileNet-v1 0.25 graph: form 'pb' (extracted) or 'tgz' (the released archive)."""
    if form == "tgz":
        return need(SLIM_2017 / f"mobilenet_v1_0.25_{size}_frozen.tgz")
    return need(SLIM_2017 / f"mobilenet_v1_0.25_{size}" / "frozen_graph.pb")


def synthetic_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images (used when the real samples are absent)."""
    return np.stack(list(each_synthetic_image(n, size, seed)))


def each_synthetic_image(n: int, size: int, seed: int = 0):
    """synthetic_images' images one by one (many large ones need not be in memory together)."""
    import cv2

    rng = np.random.default_rng(seed)
    for im in rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8):
        yield cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC)


def validation_images(n: int, real: bool = False) -> list[tuple[str, int, bytes]]:
    """n images as ImageNet validation images: (ILSVRC2012_val_NNNNNNNN.JPEG name, label, JPEG bytes),
    in val_map order. Synthetic JPEGs of varied sizes, the same with or without the shared data (the
    tests of the harness's plumbing behave one way); `real`: the real sample images, each named after
    a validation image of its own class (so MLPerf's val_map labels it right), for tests about real
    data (they skip without it)."""
    import cv2

    from preprocessing.dataset import imagenet_val_map

    name_of = {}
    for name, label in imagenet_val_map().items():
        name_of.setdefault(label, name)  # the first validation image of each class
    if real:
        listed = [line.split() for line in (need(SAMPLES) / "val_map.txt").read_text().splitlines()]
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


def crops(n: int, size: int, offset: int = 0, interpolation: str = "linear", real: bool = False) -> np.ndarray:
    """n uint8 crops (MLPerf pipeline): synthetic, the same with or without the shared data; `real`:
    of the real sample images, spread over the classes (the test skips without them)."""
    from preprocessing.pipelines import crop, make_settings

    if not real:
        return synthetic_images(n, size, seed=offset)
    files = sorted(need(SAMPLES).glob("*.JPEG"))[offset * 7::7][:n]
    settings = make_settings("mlperf", size, interpolation)
    return np.stack([crop(f, settings) for f in files])


def resnet_inputs(n: int, offset: int = 0, size: int = 224, real: bool = False) -> np.ndarray:
    """Crops through MLPerf's ResNet-50 pipeline and normalisation (NHWC float32); synthetic unless `real`."""
    from benchmark.evaluation.normalize import apply_table, lookup_table

    return apply_table(lookup_table("vgg"), crops(n, size, offset, interpolation="area", real=real))


def write_layout(root, layout, images):
    """The images as `layout`: flat with val_map.txt, flat without it, <wnid>/<file>, ImageNetV2's
    <class index>/<file>, or a tar of the flat files (members in the order given). Returns dataset.root."""
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
        folder = root / {"imagefolder": synsets[label], "imagenetv2": str(label)}.get(layout, "")
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
    """Six synthetic crops as the model's float32 NHWC input."""
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


def setup_run(*overrides):
    """python -m benchmark's stages before the first prediction (run.setup) for the config the
    overrides make, resolved as the command resolves it (spec.RunSpec.from_config)."""
    from benchmark.run import setup
    from benchmark.spec import RunSpec

    return setup(RunSpec.from_config(config(*overrides)))


def results_of(r: dict, path: Path | str = "results.json"):
    """A results dict as the one reader gives it (evaluation/results.py): upgraded from the schema it
    states (none: the first), as a Results record read from `path`."""
    from benchmark.evaluation.results import Results, upgraded

    return Results.from_dict(upgraded(r, path), path)


def unread_dataset(folder: Path) -> Path:
    """A dataset that lists one image which is no JPEG: an error raised before any image is read
    (a checkpoint refused) shows as itself; cropping the image would fail instead."""
    folder.mkdir()
    (folder / "val_map.txt").write_text("ILSVRC2012_val_00000001.JPEG 65\n")
    (folder / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"not a JPEG")
    return folder


def varied(predictions) -> bool:
    """More than one class among `predictions`: only then can two runs' equal predictions fail to
    be equal (a random-weight model may answer one class for every image)."""
    return len({p for p in predictions if p is not None}) > 1


NHWC_ONLY = ("Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool")


def float64_graph_def(graph_def):
    """The frozen graph widened to float64: every float constant, placeholder and op type, and each
    FusedBatchNorm (TensorFlow has no double kernel for it) written out as its arithmetic,
    x * mul + (offset - mean * mul) with mul = scale * rsqrt(var + epsilon), under the same name."""
    from preprocessing.tf_import import import_tensorflow

    tf = import_tensorflow()
    from tensorflow.core.framework import types_pb2
    from tensorflow.python.framework import tensor_util

    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)

    def add(name, op, inputs):
        node = out.node.add(name=name, op=op, input=inputs)
        node.attr["T"].type = types_pb2.DT_DOUBLE
        if op in ("Reshape", "Transpose"):
            node.attr["Tshape" if op == "Reshape" else "Tperm"].type = types_pb2.DT_INT32
        return name

    def const(name, value, dtype=np.float64):
        node = out.node.add(name=name, op="Const")
        node.attr["dtype"].type = tf.as_dtype(dtype).as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(np.asarray(value, dtype)))
        return name

    for node in graph_def.node:
        if node.op.startswith("FusedBatchNorm"):
            x, scale, offset, mean, var = node.input[:5]
            nchw = node.attr["data_format"].s == b"NCHW"
            n = node.name
            mul = add(f"{n}/f64/mul", "Mul", [add(f"{n}/f64/rsqrt", "Rsqrt", [add(
                f"{n}/f64/add_eps", "AddV2", [var, const(f"{n}/f64/eps", node.attr["epsilon"].f)])]), scale])
            shift = add(f"{n}/f64/shift", "Sub", [offset, add(f"{n}/f64/mean_mul", "Mul", [mean, mul])])
            if nchw:  # per channel along axis 1
                shape = const(f"{n}/f64/shape", [-1, 1, 1], np.int32)
                mul = add(f"{n}/f64/mul_chw", "Reshape", [mul, shape])
                shift = add(f"{n}/f64/shift_chw", "Reshape", [shift, shape])
            add(n, "AddV2", [add(f"{n}/f64/scaled", "Mul", [x, mul]), shift])
            continue
        new = out.node.add()
        new.CopyFrom(node)
        if node.op in NHWC_ONLY and node.attr["data_format"].s == b"NCHW":
            # TensorFlow's float64 CPU kernels take NHWC only: the op between two transposes
            perm = [const(f"{node.name}/f64/perm_{''.join(map(str, p))}", p, np.int32) for p in ([0, 2, 3, 1], [0, 3, 1, 2])]
            new.name, new.input[0] = f"{node.name}/f64/nhwc", add(f"{node.name}/f64/to_nhwc", "Transpose",
                                                                    [node.input[0], perm[0]])
            new.attr["data_format"].s = b"NHWC"
            for key in ("strides", "ksize", "dilations"):
                if key in new.attr:
                    n, c, h, w = new.attr[key].list.i
                    new.attr[key].list.i[:] = [n, h, w, c]
            add(node.name, "Transpose", [new.name, perm[1]])
        if node.op == "Const" and node.attr["dtype"].type == types_pb2.DT_FLOAT:
            value = tensor_util.MakeNdarray(node.attr["value"].tensor).astype(np.float64)
            new.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
        for key in ("T", "dtype", "U"):
            if key in new.attr and new.attr[key].type == types_pb2.DT_FLOAT:
                new.attr[key].type = types_pb2.DT_DOUBLE
    return out


_FLOAT64: dict = {}  # (graph, batch) -> logits: tests of one graph on one batch share the slow run
FLOAT64_DIR: list[Path | None] = [None]  # a folder both xdist workers share (conftest sets it): one run each


def tf_float64_logits(pb: Path, input_tensor: str, logits_tensor: str, x: np.ndarray) -> np.ndarray:
    """The frozen graph's logits for the NHWC batch `x`, run by TensorFlow in float64 throughout:
    the exact reference that TensorFlow's and the converted model's float32 logits are both near."""
    import hashlib

    key = (str(pb), Path(pb).stat().st_mtime_ns, x.shape, hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(),
           input_tensor, logits_tensor)
    if key not in _FLOAT64:
        if FLOAT64_DIR[0] is None:
            _FLOAT64[key] = _run_float64(pb, input_tensor, logits_tensor, x)
        else:
            def make(tmp):
                with open(tmp, "wb") as f:  # a file object: np.save would add .npy to a path
                    np.save(f, _run_float64(pb, input_tensor, logits_tensor, x))

            path = FLOAT64_DIR[0] / f"{hashlib.sha256(repr(key).encode()).hexdigest()[:24]}.npy"
            _FLOAT64[key] = np.load(made_once(path, make))
    return _FLOAT64[key]


def _run_float64(pb: Path, input_tensor: str, logits_tensor: str, x: np.ndarray) -> np.ndarray:
    from benchmark.formats.checkpoint import open_checkpoint
    from benchmark.formats.frozen_graph import FrozenGraph
    from benchmark.runtimes.tf import tf_graph_def
    from preprocessing.tf_import import import_tensorflow

    tf = import_tensorflow()
    graph_def = float64_graph_def(tf_graph_def(FrozenGraph.from_checkpoint(open_checkpoint(pb)).graph_def))
    with tf.Graph().as_default() as g:
        inp = tf.compat.v1.placeholder(tf.float64, [None, *x.shape[1:]])
        (logits,) = tf.graph_util.import_graph_def(graph_def, input_map={input_tensor: inp},
                                                   return_elements=[logits_tensor], name="")
        # Grappler stays on (TensorFlow's CPU max pool needs its NCHW -> NHWC rewrite): its reorderings
        # move float64 results far below the float32 errors this reference measures.
        with tf.compat.v1.Session(graph=g) as session:
            return session.run(logits, {inp: x.astype(np.float64)}).reshape(len(x), -1)


def shared_folder(tmp_path_factory, name: str) -> Path:
    """A folder every xdist worker of this test run shares (the run's own temporary folder when
    run in one process): a graph or conversion made by one worker is read by the other."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(exist_ok=True)
    return folder


def made_once(path: Path, make) -> Path:
    """`path` (a file or a folder), made by make(tmp) unless there: one worker makes it while the
    other waits (a lock file beside it), and it appears only complete (renamed into place)."""
    import fcntl
    import shutil

    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            try:
                make(tmp)
                os.replace(tmp, path)
            finally:
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                tmp.unlink(missing_ok=True)
    return path
