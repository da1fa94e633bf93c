"""Installed like any Python package: a wheel built from the checkout, installed in a fresh virtual
environment, runs every entry point from a directory outside the checkout."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO, validation_images

# What a build may not take along from a working checkout.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "outputs",
                                     "multirun", "results", ".pytest_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the checkout (the build writes into its source)."""
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, tmp / "src", ignore=NOT_SOURCES)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp / "dist"), str(tmp / "src")], check=True, capture_output=True, text=True)
    (path,) = (tmp / "dist").glob("*.whl")
    return path


def test_wheel_holds_the_packages_configs_and_labels_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "benchmark/conf/config.yaml" in names and "benchmark/conf/model/resnet50.yaml" in names
    assert "benchmark/conf/hydra/launcher/slurm.yaml" in names
    assert "preprocessing/labels/val_map.txt" in names and "preprocessing/labels/synsets.txt" in names
    assert "preprocessing/labels/real.json" in names and "preprocessing/labels/real.LICENSE" in names
    assert "benchmark/html/pages.py" in names
    assert "benchmark/testing/graphs.py" in names and "benchmark/bench/__main__.py" in names
    assert not [n for n in names if n.startswith(("tests/", "conf/", "results/"))]
    sources = [zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith(".py")]
    assert not [s for s in sources if "../shared" in s or '"tests"' in s or "'tests'" in s]


def fresh_venv_sharing_this_ones_packages(venv: Path) -> str:
    """A new virtual environment that sees the packages of the interpreter running the tests, be it
    a virtual environment itself or not (`--system-site-packages` would reach the base interpreter's,
    not an enclosing venv's). The directories are listed in a .pth file, so their own .pth files (an
    editable install of this checkout) are not run: the wheel is the only harness it can import."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    inner = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           check=True, capture_output=True, text=True).stdout.strip()
    outer = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(inner) / "outer-environment.pth").write_text("".join(f"{p}\n" for p in outer))
    return python


@pytest.mark.slow
def test_installed_wheel_runs_from_any_directory(wheel, fixture_graphs, tmp_path):
    """A fresh virtual environment (the heavy dependencies shared from this one), the wheel installed
    without the checkout: benchmark, preprocessing, export and table run from an unrelated folder."""
    venv = tmp_path / "venv"
    python = fresh_venv_sharing_this_ones_packages(venv)
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"

    def run(*args):
        proc = subprocess.run([python, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    where = run("-c", "import benchmark, preprocessing; print(benchmark.__file__); print(preprocessing.__file__)")
    assert all(line.startswith(str(venv)) for line in where.stdout.split()), where.stdout  # not the checkout

    images = work / "val"  # validation images without a labels file: MLPerf's shipped val_map labels them
    images.mkdir()
    for name, _, data in validation_images(6):
        (images / name).write_bytes(data)
    graph = fixture_graphs(0.25, 128, read_identities=False)
    common = [f"model.checkpoint={graph}", f"dataset.root={images}", f"cache_dir={tmp_path / 'cache'}", "progress=false"]

    built = run("-m", "preprocessing", *common, "model.image_size=128")  # it reads images, not the model
    assert (Path(built.stdout.split()[-1]) / "manifest.json").is_file()
    first = run("-m", "benchmark", *common)
    assert first.stdout.startswith("accuracy=") and "total=6" in first.stdout.splitlines()[0]
    assert "6 of the 50,000 ImageNet validation images are present" in first.stderr
    # overrides compose; real.json ships, checked on read
    other = run("-m", "benchmark", *common, "preprocess=torchvision", "batch_size=4", "labels.real=true")
    assert "real: accuracy=" in other.stderr
    runs = sorted((work / "results" / "runs").glob("*.json"))  # results under the current directory
    assert len(runs) == 2
    results = [json.loads(p.read_text()) for p in runs]
    assert {r["preprocess"]["decoder"] for r in results} == {"opencv", "pil"} and other.stdout.startswith("accuracy=")
    assert results[0]["git"] == {"commit": None, "dirty": None}  # an installed package is not a checkout

    exported = run("-m", "benchmark.export", *common, f"out={work / 'm.safetensors'}")
    assert (work / "m.safetensors").is_file() and str(work / "m.safetensors") in exported.stdout
    run("-m", "benchmark.table", *map(str, runs), "--out", str(work / "tables"), "--html")
    assert (work / "tables" / "runs.csv").is_file() and (work / "tables" / "report" / "index.html").is_file()
    assert "--mobilenet" in run("-m", "benchmark.bench", "--help").stdout
    lg = run("-m", "benchmark.loadgen", *common, "loadgen.scenario=SingleStream")  # the loadgen.yaml config ships
    assert lg.stdout.splitlines()[0] == first.stdout.splitlines()[0]
    (logs,) = (work / "results" / "loadgen").iterdir()
    scored = run("-m", "benchmark.mlperf_log", str(logs / "mlperf_log_accuracy.json"))
    assert scored.stdout.splitlines()[0] == first.stdout.splitlines()[0]
