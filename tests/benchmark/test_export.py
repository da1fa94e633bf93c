"""Exported models: safetensors and .pt reload without unpickling and reproduce runs exactly."""

import subprocess
import sys

import pytest
import torch

from benchmark.convert import load_converted
from benchmark.export import export, load_exported, torchvision_state_dict
from benchmark.formats.checkpoint import open_checkpoint
from tests.helpers import ENV, assert_same_predictions, resnet_inputs, run_benchmark, slim_graph, tf_tolerance


def cli(module, *args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args, "progress=false"], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_exported_model_reproduces_the_run(samples_dir, tmp_path):
    graph = slim_graph(128, "tgz")
    out = tmp_path / "export" / "mobilenet.safetensors"
    proc = cli("benchmark.export", f"model.checkpoint={graph}", f"out={out}", f"cache_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(out), str(out.with_suffix(".pt"))]
    runs = {}
    for name, ckpt in (("graph", graph), ("exported", out)):  # in this process: the export is the CLI here
        runs[name] = run_benchmark(f"model.checkpoint={ckpt}", f"dataset.root={samples_dir}", "dataset.limit=200",
                                   f"cache_dir={tmp_path}", f"results_file={tmp_path / name}.json")
    assert runs["exported"]["predictions"] == runs["graph"]["predictions"]
    assert runs["exported"]["conversion"]["exported_from_sha256"] == runs["graph"]["checkpoint"]["sha256"]


def test_pt_and_safetensors_hold_the_same_weights(fixture_graphs, tmp_path):
    ckpt = open_checkpoint(fixture_graphs(0.25, 128, read_identities=False))
    model, _ = load_converted("mobilenet_v1", ckpt, None, None)
    st, pt = export(model, "mobilenet_v1", ckpt, tmp_path / "m.safetensors", {})
    reloaded, meta = load_exported(st)
    assert meta["checkpoint_sha256"] == ckpt.sha256 and "background" in meta["classes"]
    saved = torch.load(pt, weights_only=True)  # no unpickling of arbitrary objects
    for k, v in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v) and torch.equal(saved["state_dict"][k], v)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(model(x), reloaded(x))


def test_torchvision_export_loads_into_stock_resnet50(resnet_graphs, tmp_path):
    import torchvision

    ckpt = open_checkpoint(resnet_graphs())
    model, _ = load_converted("resnet50", ckpt, None, None)
    stock = torchvision.models.resnet50().eval()
    stock.load_state_dict(torchvision_state_dict(model), strict=True)
    nhwc = resnet_inputs(16, offset=2)  # the batch the ResNet-50 agreement tests share (their float64 reference)
    x = torch.from_numpy(nhwc).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        ours, theirs = model(x)[:, 1:], stock(x)
    # Same weights, other arithmetic (max-pool padding (1, 1), BN epsilon 1e-5): not the same model.
    assert theirs.shape == (16, 1000)
    assert (ours - theirs).abs().max() > 1e-2
    # With TF's arithmetic put back (SAME max pool padding (0, 1), the graph's BN epsilon) the
    # exported weights compute the harness model's logits: every tensor went where it belongs.
    from benchmark.nn.layers import MaxPool2dSame, TFBatchNorm2d

    stock.maxpool = MaxPool2dSame(3, 2)
    ours_bns = [m for m in model.modules() if isinstance(m, TFBatchNorm2d)]
    stock_bns = [m for m in stock.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(ours_bns) == len(stock_bns) == 53
    for bn, tf_bn in zip(stock_bns, ours_bns):
        bn.eps = tf_bn.eps
    with torch.inference_mode():
        repaired = stock(x)
    assert_same_predictions(repaired.numpy(), ours.numpy(), tf_tolerance(ckpt.path, "resnet50", nhwc))


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_models_follow_the_umask(fixture_graphs, tmp_path, umask):
    """safetensors writes its file 0600: an exported model or a converted-weight cache in a shared
    folder must get the mode every other new file gets (0644 under umask 022, 0664 under 002)."""
    import os

    previous = os.umask(umask)
    try:
        ckpt = open_checkpoint(fixture_graphs(0.25, 128, read_identities=False))
        model, info = load_converted("mobilenet_v1", ckpt, None, tmp_path / "cache")
        out = tmp_path / "shared" / "m.safetensors"
        written = export(model, "mobilenet_v1", ckpt, out, {})
    finally:
        os.umask(previous)
    for path in [*written, tmp_path / "cache" / info["weights_cache"]]:
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~umask), path
