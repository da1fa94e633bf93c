"""The ImageNet layouts users hold: a flat folder with or without val_map.txt, torchvision's
ImageFolder, ImageNetV2's class index folders and the official tar, all giving the same images, labels, crops and predictions; and
each way they can be wrong is a clear error naming the file."""

import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from preprocessing import dataset as ds
from preprocessing.cache import open_cache
from preprocessing.dataset import DatasetError, imagenet_synsets, imagenet_val_map, load_dataset
from preprocessing.pipelines import ImageError, make_settings
from tests.helpers import ENV, SAMPLES, config, has, validation_images, varied, write_layout

LAYOUTS = ["val_map", "flat", "imagefolder", "tar"]
SETTINGS = make_settings("mlperf", 96, "linear")




@pytest.fixture(scope="module")
def images():
    return validation_images(24)


@pytest.fixture
def roots(tmp_path, images):
    return {layout: write_layout(tmp_path / layout, layout, images) for layout in LAYOUTS}


def test_shipped_labels_are_mlperfs():
    val_map, synsets = imagenet_val_map(), imagenet_synsets()
    assert len(val_map) == 50_000 and list(val_map)[:2] == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    assert val_map["ILSVRC2012_val_00000001.JPEG"] == 65 and val_map["ILSVRC2012_val_00050000.JPEG"] == 355
    assert np.bincount(list(val_map.values())).tolist() == [50] * 1000
    assert len(synsets) == 1000 and synsets == sorted(synsets) and synsets[0] == "n01440764"


def test_shipped_labels_agree_with_the_samples():
    """The sample images' labels are their synset's position in the shipped synsets."""
    if not has(SAMPLES):
        pytest.skip(f"real test data not found at {SAMPLES}")
    index = {wnid: i for i, wnid in enumerate(imagenet_synsets())}
    rows = [line.split() for line in (SAMPLES / "labels.txt").read_text().splitlines()]
    assert all(index[wnid] == int(label) for _, wnid, label in rows) and len(rows) == 1000


def test_damaged_shipped_labels_are_an_error(tmp_path, monkeypatch):
    damaged = tmp_path / "labels"
    damaged.mkdir()
    text = (ds.LABELS / "val_map.txt").read_text()
    (damaged / "val_map.txt").write_text(text.replace("ILSVRC2012_val_00000001.JPEG 65", "ILSVRC2012_val_00000001.JPEG 66"))
    monkeypatch.setattr(ds, "LABELS", damaged)
    ds.imagenet_val_map.cache_clear()
    try:
        with pytest.raises(DatasetError, match="val_map.txt: sha256 .* reinstall"):
            ds.imagenet_val_map()
    finally:
        ds.imagenet_val_map.cache_clear()


def test_every_layout_gives_the_same_images_labels_and_crops(roots, images, tmp_path, capsys):
    loaded = {layout: load_dataset(root) for layout, root in roots.items()}
    assert {layout: d.layout for layout, d in loaded.items()} == {
        "val_map": "val_map", "flat": "val_map", "imagefolder": "imagefolder", "tar": "tar"}
    assert [d.labels_from for d in loaded.values()] == ["labels file", "shipped val_map", "class folders",
                                                         "shipped val_map"]
    for d in loaded.values():
        assert d.labels == [label for _, label, _ in images]
        assert [d.read(i) for i in range(len(d))] == [data for _, _, data in images]
    assert [d.absent for d in loaded.values()] == [0, 50_000 - 24, 50_000 - 24, 50_000 - 24]
    assert capsys.readouterr().err.count("24 of the 50,000 ImageNet validation images are present (49,976 missing)") == 3
    assert loaded["imagefolder"].names[0] == f"{imagenet_synsets()[images[0][1]]}/{images[0][0]}"
    assert loaded["tar"].path(0) == f"{roots['tar']}:{images[0][0]}"
    caches = [open_cache(d, SETTINGS, tmp_path / "cache", workers=2, progress=False, verify="sha256")
              for d in loaded.values()]
    assert len({c.folder for c in caches}) == 4  # each root its own cache ...
    assert all(c.images.tobytes() == caches[0].images.tobytes() for c in caches)  # ... the same crops
    assert caches[0].manifest["sha256"] and all(c.manifest["sha256"] == caches[0].manifest["sha256"] for c in caches)


def test_order_follows_val_map_whatever_the_storage_order(tmp_path, images):
    shuffled = images[::-1]
    tar = load_dataset(write_layout(tmp_path / "tar", "tar", shuffled))
    assert tar.names == [n for n, _, _ in images]
    assert load_dataset(tar.root, limit=5).names == tar.names[:5]


def test_tar_of_class_folders(tmp_path, images):
    """A tar of the ImageFolder layout (under a top folder) is labelled by its class folders."""
    synsets = imagenet_synsets()
    foldered = [(f"val/{synsets[label]}/{name}", label, data) for name, label, data in images[:5]]
    d = load_dataset(write_layout(tmp_path / "t", "tar", foldered[::-1]))
    assert d.layout == "tar" and d.labels_from == "class folders"
    assert d.names == [n for n, _, _ in foldered] and d.labels == [label for _, label, _ in images[:5]]


def test_forced_layout_and_labels_file(roots, images, tmp_path):
    assert load_dataset(roots["val_map"], layout="val_map").labels_from == "labels file"
    other = tmp_path / "labels.txt"
    other.write_text("".join(f"{n} 7\n" for n, _, _ in images[:3]))
    d = load_dataset(roots["flat"], labels=other)
    assert d.labels == [7, 7, 7] and d.labels_file == other
    d = load_dataset(roots["tar"], labels=other)  # a tar's members named by a labels file
    assert d.layout == "tar" and d.names == [n for n, _, _ in images[:3]]
    with pytest.raises(DatasetError, match="layout=tar needs a tar archive, not a folder"):
        load_dataset(roots["flat"], layout="tar")
    with pytest.raises(DatasetError, match="layout=imagefolder needs a folder"):
        load_dataset(roots["tar"], layout="imagefolder")
    with pytest.raises(DatasetError, match="dataset.layout=folders: expected one of auto, val_map"):
        load_dataset(roots["flat"], layout="folders")


def test_flat_folder_errors(tmp_path, images):
    root = write_layout(tmp_path / "flat", "flat", images[:3])
    (root / "notes.txt").write_text("not an image")
    assert len(load_dataset(root)) == 3  # other files are left out, and said so
    (root / "n01440764_tench.JPEG").write_bytes(images[0][2])
    with pytest.raises(DatasetError, match=r"'n01440764_tench.JPEG' is not an ImageNet validation image name .*dataset.labels"):
        load_dataset(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no val_map.txt, no images and no class folders"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="dataset folder or archive not found"):
        load_dataset(tmp_path / "nope")


def test_imagefolder_errors(tmp_path, images, capsys):
    synsets = imagenet_synsets()
    root = write_layout(tmp_path / "imf", "imagefolder", images[:4])
    nested = root / synsets[images[0][1]] / "more"
    nested.mkdir()
    (nested / "x.JPEG").write_bytes(images[0][2])
    assert len(load_dataset(root)) == 4
    assert f"1 not image files (.jpeg, .jpg, .png), left out: '{synsets[images[0][1]]}/more/'" \
        in capsys.readouterr().err
    (root / "misc").mkdir()
    (root / "misc" / "x.JPEG").write_bytes(images[0][2])
    with pytest.raises(DatasetError, match=r"'misc/x.JPEG' is not in one of the 1,000 ILSVRC2012 class folders"):
        load_dataset(root)
    (root / "misc" / "x.JPEG").unlink()
    (root / "misc").rmdir()

    name, label, data = images[1]
    wrong = synsets[(label + 1) % 1000]
    (root / wrong).mkdir()
    os.replace(root / synsets[label] / name, root / wrong / name)  # a mis-sorted validation image
    with pytest.raises(DatasetError, match=rf"'{wrong}/{name}' is in folder {wrong} \(label {(label + 1) % 1000}\), "
                                           rf"but MLPerf's val_map labels it {label} \({synsets[label]}\)"):
        load_dataset(root)
    os.replace(root / wrong / name, root / synsets[label] / name)

    (root / wrong / name).write_bytes(data)  # the same validation image in two folders
    with pytest.raises(DatasetError, match=f"{name} is there twice"):
        load_dataset(root)
    (root / wrong / name).unlink()

    (root / "extra.JPEG").write_bytes(data)
    with pytest.raises(DatasetError, match="holds both class folders .* and images"):
        load_dataset(root)
    with pytest.raises(DatasetError, match="extra.JPEG: an image outside the class folders"):
        load_dataset(root, layout="imagefolder")


def test_imagefolder_of_other_images_is_sorted(tmp_path, images):
    """Training-style names (not validation images) are labelled by their folder, in sorted order."""
    synsets = imagenet_synsets()
    root = tmp_path / "train"
    for i, (_, label, data) in enumerate(images[:3]):
        (root / synsets[label]).mkdir(parents=True)
        (root / synsets[label] / f"{synsets[label]}_{9 - i}.JPEG").write_bytes(data)
    d = load_dataset(root)
    assert d.names == sorted(d.names) and d.labels == sorted(label for _, label, _ in images[:3]) and d.absent == 0


def test_compressed_and_damaged_archives(tmp_path, images):
    import gzip

    tar = write_layout(tmp_path / "t", "tar", images[:3])
    gz = tmp_path / "val.tar.gz"
    gz.write_bytes(gzip.compress(tar.read_bytes()))
    with pytest.raises(DatasetError, match="val.tar.gz: a gzip-compressed tar cannot be read in place"):
        load_dataset(gz)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\0" * 100 + b"junk" * 200)
    with pytest.raises(DatasetError, match="junk.tar: not a readable tar archive"):
        load_dataset(junk)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(DatasetError, match="notes.txt: neither a folder of images nor a tar archive"):
        load_dataset(other)


def test_truncated_archive_stops_or_skips_the_cut_member(tmp_path, images):
    """A download cut short inside the last member: an error naming the archive, or with
    on_error=skip a counted skip of that member, as for a truncated file."""
    tar = write_layout(tmp_path / "t", "tar", images[:4])
    with tarfile.open(tar) as t:
        last = t.getmembers()[-1]
    data = tar.read_bytes()
    tar.write_bytes(data[: last.offset_data + last.size // 2])
    with pytest.raises(DatasetError, match="ILSVRC2012_img_val.tar: the archive is cut short .* dataset.on_error=skip"):
        load_dataset(tar)
    d = load_dataset(tar, allow_missing=True)
    assert len(d) == 4
    with pytest.raises(ImageError, match=rf"{last.name}: truncated tar member \({last.size // 2} of its {last.size} bytes"):
        d.read(3)
    cache = open_cache(d, SETTINGS, tmp_path / "cache", workers=1, progress=False, on_error="skip")
    assert list(cache.failed) == [3] and "truncated tar member" in cache.failed[3]


def test_corrupt_member_is_named(tmp_path, images):
    bad = [(images[0][0], images[0][1], b"\xff\xd8\xff\xe0 not a jpeg at all \xff\xd9")] + images[1:3]
    d = load_dataset(write_layout(tmp_path / "t", "tar", bad))
    with pytest.raises(ImageError, match=rf"ILSVRC2012_img_val.tar:{images[0][0]}: OpenCV cannot decode"):
        open_cache(d, SETTINGS, tmp_path / "cache", workers=1, progress=False)
    cache = open_cache(d, SETTINGS, tmp_path / "cache", workers=1, progress=False, on_error="skip")
    assert list(cache.failed) == [0]


def test_archive_staleness_by_stat_and_by_content(tmp_path, images, capsys):
    tar = write_layout(tmp_path / "t", "tar", images[:3])
    kw = dict(workers=1, progress=False)
    first = open_cache(load_dataset(tar), SETTINGS, tmp_path / "cache", **kw, verify="sha256")
    assert first.manifest["sha256"] and None not in first.manifest["sha256"]  # digests recorded
    assert open_cache(load_dataset(tar), SETTINGS, tmp_path / "cache", **kw).folder == first.folder
    capsys.readouterr()
    st = os.stat(tar)
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: not stale by content ...
    open_cache(load_dataset(tar), SETTINGS, tmp_path / "cache", **kw, verify="sha256")
    assert "is stale" not in capsys.readouterr().err
    rebuilt = open_cache(load_dataset(tar), SETTINGS, tmp_path / "cache", **kw)  # ... but by size and mtime
    assert "is stale (size or mtime of" in capsys.readouterr().err
    # That build (verify=stat) recorded no digests: checking content rebuilds rather than trusting it.
    assert rebuilt.manifest["sha256"] is None
    open_cache(load_dataset(tar), SETTINGS, tmp_path / "cache", **kw, verify="sha256")
    assert "built without its sources' digests" in capsys.readouterr().err
    with tarfile.open(tar) as t:  # same size and mtime, one byte of a member changed
        member = t.getmembers()[1]
    data = bytearray(tar.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # as when the cache was built
    open_cache(load_dataset(tar), SETTINGS, tmp_path / "cache", **kw)
    assert "is stale" not in capsys.readouterr().err
    open_cache(load_dataset(tar), SETTINGS, tmp_path / "cache", **kw, verify="sha256")
    assert f"content of {tar}:{member.name} changed" in capsys.readouterr().err


def run_benchmark(root, graph, cache, results, cwd, *extra):
    env = dict(ENV)
    return subprocess.run([sys.executable, "-m", "benchmark", "model=mobilenet_v1", f"model.checkpoint={graph}",
                           f"dataset.root={root}", f"cache_dir={cache}", f"results_file={results}", "progress=false",
                           *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def assert_same_runs(roots, graph, tmp_path):
    """`python -m benchmark`'s run in this process for each layout (the command line itself is
    tested in tests/benchmark/test_cli.py): the same accuracy line and predictions."""
    from benchmark.run import run

    runs = {}
    for layout, root in roots.items():
        r = run(config("model=mobilenet_v1", f"model.checkpoint={graph}", f"dataset.root={root}",
                       f"cache_dir={tmp_path / 'cache'}", f"results_file={tmp_path / layout}.json"))
        runs[layout] = (r["accuracy_line"], json.loads((tmp_path / f"{layout}.json").read_text()))
    line, first = runs["val_map"]
    assert varied(first["predictions"])
    for layout, (other_line, r) in runs.items():
        assert other_line == line and r["predictions"] == first["predictions"], layout
        assert r["dataset"]["layout"] == {"flat": "val_map"}.get(layout, layout)
    return line, first


def test_imagenetv2_folders_are_numbered_classes_in_numeric_order(tmp_path, images):
    """ImageNetV2's folders 0..999 are class indices: folder 10 is class 10 and comes after folder 2
    (sorted as strings, "10" < "2"); detected, or named with dataset.layout=imagenetv2."""
    chosen = [(f"{k}.jpeg", label, images[k][2]) for k, label in enumerate([2, 10, 100, 999, 0])]
    root = write_layout(tmp_path / "v2", "imagenetv2", chosen)
    (root / "10" / "1b.jpeg").write_bytes(images[5][2])  # a second image of class 10: by name in its folder
    d = load_dataset(root)
    assert d.layout == "imagenetv2" and d.labels_from == "class index folders" and d.label_set == "ImageNetV2"
    assert d.names == ["0/4.jpeg", "2/0.jpeg", "10/1.jpeg", "10/1b.jpeg", "100/2.jpeg", "999/3.jpeg"]
    assert d.labels == [0, 2, 10, 10, 100, 999] and d.absent == 0
    assert load_dataset(root, layout="imagenetv2").names == d.names
    tar = tmp_path / "v2.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname="imagenetv2-matched-frequency-format-val")
    from_tar = load_dataset(tar)
    assert from_tar.labels == d.labels and from_tar.label_set == "ImageNetV2"
    assert from_tar.names == [f"imagenetv2-matched-frequency-format-val/{n}" for n in d.names]
    for bad in ("1000", "007"):  # no class index: a folder that is no class, beside the classes
        broken = write_layout(tmp_path / f"bad-{bad}", "imagenetv2", chosen[:2])
        (broken / bad).mkdir()
        (broken / bad / "x.jpeg").write_bytes(images[0][2])
        with pytest.raises(DatasetError, match=f"'{bad}/x.jpeg' is not in a class index folder"):
            load_dataset(broken)
    stray = write_layout(tmp_path / "stray", "imagenetv2", chosen[:2])
    (stray / "x.jpeg").write_bytes(images[0][2])
    with pytest.raises(DatasetError, match="holds both ImageNetV2's class index folders .* and images"):
        load_dataset(stray)
    with pytest.raises(DatasetError, match="x.jpeg: an image outside the class folders .layout imagenetv2"):
        load_dataset(stray, layout="imagenetv2")


def test_every_layout_gives_the_same_predictions(roots, images, fixture_graphs, tmp_path):
    """End to end through `python -m benchmark`: the same accuracy line and predictions from each layout."""
    graph = fixture_graphs(0.25, 128, read_identities=False)
    line, first = assert_same_runs(roots, graph, tmp_path)
    assert line == first["accuracy_line"] and first["total"] == len(images)
    assert_same_as_imagenetv2(images, first, graph, tmp_path)


def assert_same_as_imagenetv2(images, first, graph, tmp_path):
    """The images in ImageNetV2's layout (one per class here): the same line and the same prediction
    for each class's image; the results say which layout and label set scored them."""
    from benchmark.run import run

    root = write_layout(tmp_path / "imagenetv2", "imagenetv2", images)
    r = run(config("model=mobilenet_v1", f"model.checkpoint={graph}", f"dataset.root={root}",
                   f"cache_dir={tmp_path / 'cache'}", f"results_file={tmp_path / 'v2.json'}"))
    assert r["accuracy_line"] == first["accuracy_line"]
    assert r["dataset"]["layout"] == "imagenetv2" and r["dataset"]["label_set"] == "ImageNetV2"
    assert first["dataset"]["label_set"] == "labels file"
    by_label = dict(zip(first["ground_truth"], first["predictions"]))
    assert len(by_label) == len(images) and r["images"][0].split("/")[0] == str(min(by_label))
    assert dict(zip(r["ground_truth"], r["predictions"])) == by_label


@pytest.mark.slow
def test_all_samples_in_every_layout_agree(tmp_path):
    """The 1,000 real samples as validation images, with the real MobileNet-v1 0.25/224 graph."""
    if not has(SAMPLES):
        pytest.skip(f"real test data not found at {SAMPLES}")
    from tests.helpers import slim_graph

    images = validation_images(1000, real=True)
    roots = {layout: write_layout(tmp_path / layout, layout, images) for layout in LAYOUTS}
    graph = slim_graph(224, "tgz")
    line, first = assert_same_runs(roots, graph, tmp_path)
    assert_same_as_imagenetv2(images, first, graph, tmp_path)
    # The samples under their own names and val_map (one image per class, in another order): the
    # same line, and the same prediction for each class's image.
    proc = run_benchmark(SAMPLES, graph, tmp_path / "cache", tmp_path / "samples.json", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = json.loads((tmp_path / "samples.json").read_text())
    assert proc.stdout.splitlines()[0] == line
    labels = [label for _, label, _ in images]
    sample_labels = [int(row.split()[1]) for row in (SAMPLES / "val_map.txt").read_text().splitlines()]
    assert dict(zip(labels, first["predictions"])) == dict(zip(sample_labels, samples["predictions"]))


def test_tar_members_from_macos_links_and_sparse_files(tmp_path):
    """A tar made on macOS holds an AppleDouble `._<name>` beside each file: hidden, as in folders.
    A hard link reads as the member it names; a symbolic link or a sparse member (whose bytes are
    not stored in place) is refused by name when read, never read as if it were the image."""
    import tarfile

    from preprocessing.dataset import load_dataset
    from preprocessing.pipelines import ImageError

    images = validation_images(4)
    path = tmp_path / "ILSVRC2012_img_val.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, _, data in images[:2]:
            for member, content in ((f"._{name}", b"\x00\x05\x16\x07AppleDouble"), (name, data)):
                info = tarfile.TarInfo(member)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        kinds = {images[2][0]: (tarfile.LNKTYPE, images[0][0]), images[3][0]: (tarfile.SYMTYPE, images[1][0])}
        for name, (kind, target) in kinds.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
        sparse = tarfile.TarInfo("ILSVRC2012_val_00049999.JPEG")
        sparse.type, sparse.size = tarfile.GNUTYPE_SPARSE, 0
        tar.addfile(sparse)
    dataset = load_dataset(path, allow_missing=True)
    assert sorted(dataset.names) == sorted([*(n for n, _, _ in images), "ILSVRC2012_val_00049999.JPEG"])
    by_name = {n: i for i, n in enumerate(dataset.names)}
    assert dataset.read(by_name[images[2][0]]) == images[0][2]  # the hard link reads its target's data
    with pytest.raises(ImageError, match="symbolic link"):
        dataset.read(by_name[images[3][0]])
    with pytest.raises(ImageError, match="ILSVRC2012_val_00049999.JPEG: a sparse member"):
        dataset.read(by_name["ILSVRC2012_val_00049999.JPEG"])
