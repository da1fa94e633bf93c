"""Bad images, labels and checkpoints; interrupted and concurrent cache builds; stale caches.
Never a silently wrong number: each case is a clear error, or an explicit, counted skip."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from preprocessing.cache import open_cache
from preprocessing.dataset import load_dataset
from preprocessing.pipelines import ImageError, crop, make_settings
from tests.helpers import ENV, each_synthetic_image, made_once, run_benchmark, shared_folder, synthetic_images

SETTINGS = make_settings("mlperf", 64, "linear")


def jpeg_bytes(img_rgb: np.ndarray, **save) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(img_rgb).save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


@pytest.fixture
def image(tmp_path):
    return synthetic_images(1, 120)[0]


def test_truncated_jpeg_is_an_error(tmp_path, image):
    path = tmp_path / "cut.JPEG"
    data = jpeg_bytes(image)
    path.write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(path)) is not None  # OpenCV alone would score the partial image
    with pytest.raises(ImageError, match="cut.JPEG: truncated or corrupt JPEG"):
        crop(path, SETTINGS)


def test_trailing_bytes_after_a_complete_jpeg_are_fine(tmp_path, image):
    path = tmp_path / "tail.JPEG"
    path.write_bytes(jpeg_bytes(image) + b"trailing junk")
    clean = tmp_path / "clean.JPEG"
    clean.write_bytes(jpeg_bytes(image))
    np.testing.assert_array_equal(crop(path, SETTINGS), crop(clean, SETTINGS))


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"),
    (np.random.default_rng(0).bytes(3000), "OpenCV cannot decode"),
    (b"\xff\xd8\xff\xe0 not a real jpeg", "truncated or corrupt JPEG"),
    (b"\xff\xd8\xff\xe0 not a real jpeg \xff\xd9", "OpenCV cannot decode"),
])
def test_undecodable_files(tmp_path, content, message):
    path = tmp_path / "bad.JPEG"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=f"bad.JPEG: {message}"):
        crop(path, SETTINGS)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="gone.JPEG: file not found"):
        crop(tmp_path / "gone.JPEG", SETTINGS)


def test_png_named_jpeg_is_read_like_opencv_does(tmp_path, image):
    """ImageNet's validation set holds a PNG named .JPEG; cv2.imread reads it by content."""
    png = tmp_path / "png.JPEG"
    cv2.imwrite(str(tmp_path / "ref.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    png.write_bytes((tmp_path / "ref.png").read_bytes())
    np.testing.assert_array_equal(crop(png, SETTINGS), crop(tmp_path / "ref.png", SETTINGS))


def test_cmyk_and_grayscale_jpegs_become_rgb(tmp_path, image):
    gray = tmp_path / "gray.JPEG"
    Image.fromarray(image[:, :, 0]).save(gray, "JPEG")
    out = crop(gray, SETTINGS)
    assert out.shape == (64, 64, 3) and (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    cmyk = tmp_path / "cmyk.JPEG"
    Image.fromarray(image).convert("CMYK").save(cmyk, "JPEG", quality=95)
    out = crop(cmyk, SETTINGS)
    expected = crop_from_rgb(np.asarray(Image.open(cmyk).convert("RGB")))
    assert out.shape == (64, 64, 3)
    # OpenCV's and Pillow's CMYK-to-RGB conversions differ slightly; the colours must be the same.
    assert np.abs(out.astype(int) - expected).mean() < 8


def crop_from_rgb(rgb: np.ndarray) -> np.ndarray:
    from preprocessing.pipelines import center_crop, resized_size

    h, w = resized_size(rgb.shape[0], rgb.shape[1], 64, 87.5)
    return center_crop(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR), 64)


def test_exif_rotation_is_applied_as_cv2_imread_does(tmp_path):
    """cv2.imread (MLPerf) applies the EXIF orientation; Pillow's Image.open does not."""
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :100] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.JPEG"
    path.write_bytes(jpeg_bytes(img, exif=exif))
    assert cv2.imread(str(path)).shape[:2] == (200, 100)
    assert Image.open(path).size == (200, 100)  # Pillow: width 200, height 100, not rotated
    out = crop(path, SETTINGS)
    assert out[:20].mean() > 200 and out[-20:].mean() < 50  # white half on top after rotation
    np.testing.assert_array_equal(out, crop_from_rgb(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)))


def _image_files(tmp_path, image):
    """Every kind of file cv2.imread meets in an ImageNet-like folder."""
    files = {}

    def save(name, array, **kw):
        files[name] = tmp_path / name
        Image.fromarray(array).save(files[name], **kw)

    save("rgb.JPEG", image, format="JPEG", quality=90)
    save("progressive.JPEG", image, format="JPEG", quality=90, progressive=True)
    save("subsampled444.JPEG", image, format="JPEG", quality=90, subsampling=0)
    save("gray.JPEG", image[:, :, 0], format="JPEG")
    files["cmyk.JPEG"] = tmp_path / "cmyk.JPEG"
    Image.fromarray(image).convert("CMYK").save(files["cmyk.JPEG"], "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    files["exif.JPEG"] = tmp_path / "exif.JPEG"
    files["exif.JPEG"].write_bytes(jpeg_bytes(image[:, :90], exif=exif))
    save("png.JPEG", image, format="PNG")
    save("rgba.png", np.dstack([image, image[:, :, :1]]), format="PNG")
    save("gray16.png", image[:, :, 0].astype(np.uint16) * 257, format="PNG")
    return files


def test_opencv_decoder_is_cv2_imread_then_bgr_to_rgb(tmp_path, image):
    """MLPerf reads with cv2.imread and swaps to RGB; the decoder's RGB output must be exactly that."""
    from preprocessing.pipelines import decode_rgb

    for name, path in _image_files(tmp_path, image).items():
        expected = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        got = decode_rgb(path.read_bytes(), path, "opencv")
        assert got.shape == expected.shape and got.tobytes() == expected.tobytes(), name


@pytest.mark.parametrize("shape", [(1, 1), (10, 5000), (5000, 10), (12000, 12000)])
def test_extreme_sizes(tmp_path, shape):
    path = tmp_path / "odd.JPEG"
    h, w = shape
    img = np.full((h, w, 3), 90, np.uint8)
    img[: h // 2] = 200
    cv2.imwrite(str(path), img)
    out = crop(path, SETTINGS)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


@pytest.fixture
def mixed_dataset(tmp_path):
    """Good images plus each kind of unreadable one, names with spaces, quotes and non-ASCII."""
    root = tmp_path / "val"
    root.mkdir()
    names = []
    for i, img in enumerate(synthetic_images(6, 90)):
        name = f'good {i} "q" é\'.JPEG'
        cv2.imwrite(str(root / name), img)
        names.append(name)
    (root / "empty.JPEG").write_bytes(b"")
    (root / "noise.JPEG").write_bytes(np.random.default_rng(1).bytes(2000))
    cut = jpeg_bytes(synthetic_images(1, 90, seed=5)[0])
    (root / "cut.JPEG").write_bytes(cut[: len(cut) // 2])
    names[2:2] = ["empty.JPEG", "noise.JPEG", "missing.JPEG", "cut.JPEG"]
    (root / "val_map.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)), encoding="utf-8")
    return root


def test_skip_records_every_unreadable_image(mixed_dataset, tmp_path, capsys):
    ds = load_dataset(mixed_dataset, allow_missing=True)
    cache = open_cache(ds, SETTINGS, tmp_path / "c", workers=2, progress=False, on_error="skip", verify="sha256")
    reasons = {ds.names[i]: r for i, r in cache.failed.items()}
    assert set(reasons) == {"empty.JPEG", "noise.JPEG", "missing.JPEG", "cut.JPEG"}
    assert "file not found" in reasons["missing.JPEG"] and "truncated" in reasons["cut.JPEG"]
    good = [i for i in range(len(ds)) if i not in cache.failed]
    for i in good:
        np.testing.assert_array_equal(cache.images[i], crop(ds.path(i), SETTINGS))
    # Reused as built when checked by content: each file's digest, missing and empty ones included,
    # was recorded (a build for verify=sha256) as verify=sha256 computes it.
    capsys.readouterr()
    again = open_cache(ds, SETTINGS, tmp_path / "c", progress=False, on_error="skip", verify="sha256")
    assert "building" not in capsys.readouterr().err and again.manifest["sha256"][4] is None
    # The same cache opened without skipping is refused, naming the first unreadable file.
    with pytest.raises(ImageError, match="empty.JPEG: empty file.*4 unreadable"):
        open_cache(ds, SETTINGS, tmp_path / "c", workers=2, progress=False)


def run_cli(module, *args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args, "progress=false"], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


def test_run_stops_or_skips_and_counts(mixed_dataset, fixture_graphs, tmp_path, capsys):
    """`python -m benchmark`'s run in this process (its command line's exit status and one-line error
    are tests/benchmark/test_cli.py's): stops naming the file, or skips and counts with on_error=skip."""
    from preprocessing.errors import UserError

    graph = fixture_graphs(0.25, 128, read_identities=False)
    common = [f"model.checkpoint={graph}", f"dataset.root={mixed_dataset}", f"cache_dir={tmp_path / 'c'}"]
    with pytest.raises(UserError, match="missing.JPEG"):
        run_benchmark(*common)
    capsys.readouterr()
    results = tmp_path / "skip.json"
    r = run_benchmark(*common, "dataset.on_error=skip", f"results_file={results}")
    assert json.loads(results.read_text())["skipped"] == r["skipped"]
    assert r["total"] == 6 and r["dataset"]["listed"] == 10
    assert [s["file"] for s in r["skipped"]] == ["empty.JPEG", "noise.JPEG", "missing.JPEG", "cut.JPEG"]
    assert r["predictions"][2:6] == [None] * 4 and None not in r["predictions"][:2] + r["predictions"][6:]
    assert capsys.readouterr().out.splitlines()[0].endswith("total=6 (skipped 4 of 10 listed: unreadable, see "
                                                            "'skipped' in the results)")


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory):
    """800 JPEGs of 600 x 600 (a build of ~0.6 s on 2 cores), written once for both xdist workers."""
    def make(root):
        root.mkdir()
        for i, img in enumerate(each_synthetic_image(800, 600, seed=3)):
            cv2.imwrite(str(root / f"{i:04d}.JPEG"), img)
        (root / "val_map.txt").write_text("".join(f"{i:04d}.JPEG {i % 1000}\n" for i in range(800)))

    return made_once(shared_folder(tmp_path_factory, "bad-input") / "val", make)


@pytest.fixture
def sample_dataset(sample_images, tmp_path):
    """Each test's own copy (one edits an image)."""
    import shutil

    return Path(shutil.copytree(sample_images, tmp_path / "val"))


def build_args(root, cache):
    return ["model.image_size=160", f"dataset.root={root}", f"cache_dir={cache}", "workers=2"]


def start_build(root, cache, cwd) -> subprocess.Popen:
    """A `python -m preprocessing` build, returned once it has started building."""
    proc = subprocess.Popen([sys.executable, "-m", "preprocessing", *build_args(root, cache), "progress=false"],
                            cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while "building preprocessing cache" not in proc.stderr.readline():
        assert proc.poll() is None, "the build ended before it started"
    return proc


@pytest.mark.slow
def test_killed_builds_are_never_read_and_end_bit_identical(sample_dataset, tmp_path):
    done = start_build(sample_dataset, tmp_path / "ref", tmp_path)
    started = time.monotonic()
    while " images, " not in done.stderr.readline():  # printed once the cache is complete
        assert done.poll() is None, "the build ended without its summary line"
    build_s = time.monotonic() - started  # the kills below land at fractions of it, on any machine
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err[-2000:]
    reference = np.load(os.path.join(out.strip().splitlines()[-1], "images.npy"))
    cache = tmp_path / "killed"
    unfinished = 0
    for fraction in (0.0, 0.25, 0.5, 0.75):
        proc = start_build(sample_dataset, cache, tmp_path)
        time.sleep(fraction * build_s)
        proc.send_signal(signal.SIGKILL)  # the build and its cropping threads with it
        proc.wait()
        manifests = list((cache / "crops").glob("*/manifest.json"))
        unfinished += not manifests
        # A folder with a manifest is a finished build: it must be whole. Without one it is never read.
        for manifest in manifests:
            assert np.load(manifest.parent / "images.npy").tobytes() == reference.tobytes()
        for m in manifests:  # start the next round from scratch again
            m.unlink()
    assert unfinished >= 3  # the kills did land in the middle of builds
    finished = run_cli("preprocessing", *build_args(sample_dataset, cache), cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    folder = finished.stdout.strip().splitlines()[-1]
    assert np.load(os.path.join(folder, "images.npy")).tobytes() == reference.tobytes()


@pytest.mark.slow
def test_concurrent_builds_share_one_cache(sample_dataset, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "preprocessing", *build_args(sample_dataset, tmp_path),
                               "progress=false"], cwd=tmp_path, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    folders = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(folders) == 1
    assert sum("building preprocessing cache" in err for _, err in outs) == 1  # the other waited
    images = np.load(os.path.join(folders.pop(), "images.npy"))
    ds = load_dataset(sample_dataset)
    settings = make_settings("mlperf", 160, "linear")
    for i in (0, 399, 799):
        np.testing.assert_array_equal(images[i], crop(ds.path(i), settings))


def test_same_size_and_mtime_edit_needs_content_verification(sample_dataset, tmp_path, capsys):
    ds = load_dataset(sample_dataset, limit=20)
    first = open_cache(ds, SETTINGS, tmp_path, workers=1, progress=False, verify="sha256")  # digests recorded
    before = np.array(first.images[7])
    path = Path(ds.path(7))
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    other = cv2.imencode(".png", np.full((200, 200, 3), 30, np.uint8))[1].tobytes()
    path.write_bytes(other + b"\0" * (len(data) - len(other)))  # same size, other picture
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    assert np.array_equal(open_cache(ds, SETTINGS, tmp_path, progress=False).images[7], before)  # stat can't tell
    capsys.readouterr()
    rebuilt = open_cache(ds, SETTINGS, tmp_path, workers=1, progress=False, verify="sha256")
    assert f"content of {path} changed" in capsys.readouterr().err
    assert not np.array_equal(rebuilt.images[7], before)
    np.testing.assert_array_equal(rebuilt.images[7], crop(path, SETTINGS))


def test_bad_checkpoints_fail_before_any_work(tmp_path, fixture_graphs, mixed_dataset):
    import tensorflow as tf

    good = fixture_graphs(0.25, 128, read_identities=False).read_bytes()
    truncated = tmp_path / "truncated.pb"
    truncated.write_bytes(good[: len(good) // 3])
    with tf.Graph().as_default() as g:
        x = tf.compat.v1.placeholder(tf.float32, [None, 128, 128, 3], name="input")
        tf.reduce_mean(x, axis=[1, 2], name="other_net/Mean")
    other = tmp_path / "other_architecture.pb"
    other.write_bytes(g.as_graph_def().SerializeToString())
    import re

    from preprocessing.errors import UserError

    cases = ((truncated, "mobilenet_v1", "truncated.pb"),
             (other, "mobilenet_v1", "other_architecture.pb: node 'other_net/Mean'.*model=mobilenet_v1"),
             (fixture_graphs(0.25, 128, read_identities=False), "resnet50", r"node 'MobilenetV1/.*model=resnet50"))
    for path, model, message in cases:  # in this process (the command line's status 2: test_cli.py)
        cache = tmp_path / f"cache-{path.stem}-{model}"
        with pytest.raises(UserError) as raised:
            run_benchmark(f"model={model}", f"model.checkpoint={path}", f"dataset.root={mixed_dataset}",
                          "dataset.on_error=skip", f"cache_dir={cache}")
        error = str(raised.value)
        assert re.search(message, error), error[-2000:]
        assert not (cache / "crops").exists()  # nothing was preprocessed
