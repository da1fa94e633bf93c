"""python -m benchmark.compare model=... model.checkpoint=... dataset.root=... dataset.limit=8

Feeds the same preprocessed images to the frozen graph in TensorFlow and to the converted PyTorch
model, pairs every PyTorch layer output with the TF tensor the converter mapped it from, and reports
per layer: max abs diff, max relative diff, cosine similarity, and the first layer whose error
exceeds the tolerance. `compare_preprocess=<pipeline>` feeds PyTorch another pipeline's crops: the
divergence then starts at the input row, telling a preprocessing difference from a conversion fault.

A user's module (model=module) or a transformed model (model.transform=) is compared the same way
with the exact conversion in PyTorch (of reference_checkpoint=, or of the model's own checkpoint):
layers paired by name where the two trees share names (the export's torchvision names), otherwise
by execution order, kind and output shape; the first layer that departs is named.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

if TYPE_CHECKING:
    from benchmark.spec import RunSpec

# Relative to the layer's largest TF value. TF's and PyTorch's float32 kernels sum in other orders;
# with a right conversion the difference stays below 1.2e-4 of a layer's largest value on the real
# MobileNet graphs and the test graphs (largest after a ReLU6 that clips pre-activations of ~80,
# so it inherits their absolute error). A conversion fault (padding, epsilon, kernel layout,
# channel order, pool padding) moves the first layer it touches by 1e-2 or more.
TOLERANCE = 1e-3
# Two PyTorch models computing the same layer in float32 (a port's nn.BatchNorm2d against the TF
# batch norm's order of arithmetic) differ by at most 1.4e-5 of the layer's largest value on the
# test's MobileNet port; a padding slip or a changed weight moves the layer by 1e-2 or more. The
# same threshold as TensorFlow's serves: differences of arithmetic order stay far below it.


def _capture(model: torch.nn.Module, x: torch.Tensor, paths: list[str]) -> dict[str, np.ndarray]:
    """Every tapped module's output (cloned: later in-place ops must not change what was seen)."""
    seen: dict[str, np.ndarray] = {}
    hooks = []
    for path in {p for p in paths if p}:
        def hook(module, args, output, path=path):
            seen[path] = output.detach().float().cpu().clone().numpy()
        hooks.append(model.get_submodule(path).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            seen[""] = model(x).float().cpu().numpy()
    finally:
        for h in hooks:
            h.remove()
    return seen


def _as_torch_layout(tf_value: np.ndarray, shape: tuple) -> np.ndarray:
    """A TF (NHWC) value in PyTorch's layout. Always transposed, never guessed from the shape:
    a 32 x 32 x 32 feature map looks the same both ways."""
    value = tf_value.transpose(0, 3, 1, 2) if tf_value.ndim == 4 else tf_value
    if value.shape != shape and value.size == int(np.prod(shape)):  # logits [N, 1, 1, C] vs [N, C]
        value = value.reshape(shape)
    if value.shape != shape:
        raise ValueError(f"TF tensor of shape {tf_value.shape} cannot be compared with PyTorch's {shape}")
    return value


def _row(module: str, tensor: str, ours: np.ndarray, theirs: np.ndarray, tolerance: float) -> dict:
    a, b = ours.astype(np.float64).ravel(), theirs.astype(np.float64).ravel()
    max_abs = float(np.abs(a - b).max())
    scale = float(np.abs(b).max()) or 1.0
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return {"module": module or "(output)", "tensor": tensor, "shape": list(ours.shape),
            "max_abs_diff": max_abs, "max_rel_diff": max_abs / scale,
            "cosine": float(a @ b / denom) if denom else 1.0, "over": max_abs / scale > tolerance}


def compare_layers(model: torch.nn.Module, taps: list, tf_model, torch_input: np.ndarray,
                   tf_input: np.ndarray, tolerance: float = TOLERANCE) -> dict:
    """Both backends on NHWC float inputs; one row per tapped layer, the inputs first."""
    model = model.eval()
    seen = _capture(model, torch.from_numpy(torch_input).permute(0, 3, 1, 2).contiguous(), [m for m, _ in taps])
    tf_values = tf_model.tensors(tf_input, [t for _, t in taps])
    rows = [_row("input", tf_model.input.name, torch_input, tf_input, tolerance)]  # both NHWC
    for (module, tensor), value in zip(taps, tf_values):
        ours = seen[module]
        rows.append(_row(module, tensor, ours, _as_torch_layout(value, ours.shape), tolerance))
    first = next((i for i, r in enumerate(rows) if r["over"]), None)
    verdict = "all layers within tolerance"
    if first == 0:
        verdict = "the inputs differ: a preprocessing difference, not a conversion fault"
    elif first is not None:
        verdict = (f"first divergence at {rows[first]['module']} ({rows[first]['tensor']}): the inputs "
                   "agree, so the conversion of this layer (or its input) is wrong")
    return {"tolerance": tolerance, "first_divergence": None if first is None else rows[first]["module"],
            "verdict": verdict, "layers": rows}


KINDS = (("conv", ("Conv",)), ("norm", ("Norm",)), ("pool", ("Pool",)), ("linear", ("Linear",)),
         ("act", ("ReLU", "ReLU6", "Hardtanh", "GELU", "SiLU", "Sigmoid", "Tanh", "Hardswish")))


def kind(module: torch.nn.Module) -> str | None:
    """What a layer computes, from its class names (a subclass of nn.Conv2d is a conv)."""
    names = [c.__name__ for c in type(module).__mro__]
    for k, parts in KINDS:
        if any(part in n for n in names for part in parts):
            return k
    return None


def record(model: torch.nn.Module, x: torch.Tensor) -> list[dict]:
    """Every module's tensor output, in the order the forward computed it (a module called more
    than once: `path#k` for its k-th call), with whether it is a leaf and its kind; the model's
    output last, as "(output)"."""
    seen: list[dict] = []
    calls: dict[str, int] = {}
    hooks = []
    for path, module in model.named_modules():
        if not path:
            continue
        leaf = next(module.children(), None) is None

        def hook(m, args, output, path=path, leaf=leaf):
            if not isinstance(output, torch.Tensor):
                return
            k = calls[path] = calls.get(path, 0) + 1
            value = output.detach().float().cpu().clone().numpy()
            seen.append({"path": path if k == 1 else f"{path}#{k}", "value": value, "leaf": leaf, "kind": kind(m)})
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            out = model(x).float().cpu().numpy()
    finally:
        for h in hooks:
            h.remove()
    return [*seen, {"path": "(output)", "value": out, "leaf": True, "kind": "output"}]


def match(ours: list[dict], exact: list[dict]) -> tuple[str, list[tuple[dict, dict]]]:
    """Pairs of (our layer, the exact model's layer): by name where the trees share most names
    (each of ours whose path and shape the exact model has), otherwise by execution order over the
    leaves, a pair where kind and shape agree (a layer of ours with none, such as a padding, is
    passed over)."""
    by_path = {r["path"]: r for r in exact}
    named = [(r, by_path[r["path"]]) for r in ours if r["path"] in by_path
             and (r["value"].shape == by_path[r["path"]]["value"].shape or r["path"] == "(output)")]
    leaves = [r for r in ours if r["leaf"]]
    if len([p for p in named if p[0]["leaf"]]) * 2 >= len(leaves):
        return "name", named
    pairs, j = [], 0
    exact_leaves = [r for r in exact if r["leaf"]]
    for r in (r for r in leaves if r["kind"] is not None):
        for k in range(j, len(exact_leaves)):
            e = exact_leaves[k]
            if r["kind"] == e["kind"] and (r["value"].shape == e["value"].shape or r["kind"] == "output"):
                pairs.append((r, e))
                j = k + 1
                break
    return "execution order, kind and shape", pairs


def compare_modules(model: torch.nn.Module, exact: torch.nn.Module, x: torch.Tensor, x_exact: torch.Tensor,
                    tolerance: float = TOLERANCE) -> dict:
    """A user's (or a transformed) module against the exact model on NCHW inputs, layer by layer:
    one row per paired layer, the inputs first, and the first layer that departs named."""
    ours, theirs = record(model.eval(), x), record(exact.eval(), x_exact)
    how, pairs = match(ours, theirs)
    rows = [_row("input", "input", x.numpy(), x_exact.numpy(), tolerance)]
    for a, b in pairs:
        va, vb = a["value"], b["value"]
        if va.shape != vb.shape:  # the logits of 1000 classes against MLPerf's 1001 (background first)
            va, vb = va[:, -1000:], vb[:, -1000:]
        rows.append(_row(a["path"], b["path"], va, vb, tolerance))
    first = next((i for i, r in enumerate(rows) if r["over"]), None)
    verdict = "all layers within tolerance: the module computes what the exact model computes"
    if first == 0:
        verdict = "the inputs differ: a normalisation or preprocessing difference, not the module"
    elif first is not None:
        r = rows[first]
        verdict = (f"first departure at {r['module']} (the exact model's {r['tensor']}): max rel diff "
                   f"{r['max_rel_diff']:.3g}; every layer before it agrees, so this layer (or how it is fed) differs")
    return {"tolerance": tolerance, "matched_by": how,
            "first_divergence": None if first is None else rows[first]["module"],
            "verdict": verdict, "layers": rows, "columns": ("yours", "exact"),
            "tolerance_reason": f"tolerance: max rel diff {tolerance:g} of the exact layer's largest value (two "
                                "float32 PyTorch models summing in other orders stay near 1e-5; a padding slip or "
                                "a changed weight moves a layer by 1e-2 and more); layers paired by " + how}


def format_report(report: dict) -> str:
    ours, theirs = report.get("columns", ("pytorch", "tensorflow"))
    lines = [f"{ours:34} {theirs:58} {'shape':>20} {'max abs':>9} {'max rel':>9} {'cosine':>10}"]
    marked = False
    for r in report["layers"]:
        mark = ""
        if r["over"] and not marked:
            mark, marked = "  <== first over tolerance", True
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"{r['module'][:34]:34} {r['tensor'][-58:]:58} {shape:>20} {r['max_abs_diff']:9.2e} "
                     f"{r['max_rel_diff']:9.2e} {r['cosine']:10.7f}{mark}")
    lines.append(report.get("tolerance_reason") or
                 f"tolerance: max rel diff {report['tolerance']:g} of the layer's largest TF value (TF's and "
                 "PyTorch's float32 kernels sum in other orders: below 1.2e-4 when the conversion is right, "
                 "1e-2 and more at a conversion fault)")
    lines.append(report["verdict"])
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["layers"]
    ys = [max(r["max_rel_diff"], 1e-12) for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, 0.12 * len(rows)), 4))
    ax.semilogy(range(len(rows)), ys, marker=".", lw=1)
    ax.axhline(report["tolerance"], color="red", ls="--", lw=1, label=f"tolerance {report['tolerance']:g}")
    if report["first_divergence"]:
        i = next(i for i, r in enumerate(rows) if r["over"])
        ax.annotate(rows[i]["module"], (i, ys[i]), xytext=(5, 10), textcoords="offset points", fontsize=8)
    step = max(1, len(rows) // 30)
    ax.set_xticks(range(0, len(rows), step), [rows[i]["module"] for i in range(0, len(rows), step)],
                  rotation=90, fontsize=6)
    ours, theirs = report.get("columns", ("torch", "tf"))
    ax.set_ylabel(f"max |{ours} - {theirs}| / max |{theirs}|")
    ax.set_title(report["verdict"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@hydra.main(version_base="1.3", config_path="pkg://benchmark.conf", config_name="compare")
def main(cfg: DictConfig) -> None:
    from preprocessing.errors import exit_on_user_error

    exit_on_user_error(lambda: compare(cfg))


def compare(cfg: DictConfig) -> dict:
    from omegaconf import open_dict

    from benchmark import runtimes
    from benchmark.run import model_source
    from benchmark.spec import RunSpec
    from preprocessing.stage import PipelineSpec, build_cache, prepare

    spec = RunSpec.from_config(cfg)  # the config read here, once
    dataset = spec.dataset.listed()  # before a checkpoint is opened (downloaded)
    if spec.is_module or spec.transform is not None:
        return save(cfg, against_exact(spec, dataset))
    source = model_source(spec.model, spec.checkpoint_dir, spec.cache_folder, spec.progress)
    # An ONNX model's tensors come from ONNX Runtime, a frozen graph's from TensorFlow (Grappler off:
    # an intermediate tensor of the rewritten graph need not be the graph's own).
    reference = runtimes.create("onnxruntime" if source.ckpt.is_onnx else "tf", source,
                                runtimes.Options(threads=spec.threads, role="reference", optimize=False))
    model = source.torch_model(fold_bn=False)  # each layer as the graph has it (an ONNX model: folded)
    from benchmark.nn.graph import GraphModule

    # model=graph: every node the image reaches, by the TF node it is named after
    taps = model.taps(source.tensors[1]) if isinstance(model, GraphModule) else model.spec.taps
    inputs = prepare(dataset, spec.pipeline, reference.image_size)
    normalize = source.normalize
    tf_crops = np.asarray(build_cache(spec.cache, inputs).images)
    torch_crops = tf_crops
    if cfg.compare_preprocess:
        other = cfg.copy()
        with open_dict(other):
            other.preprocess = _preprocess_config(cfg.compare_preprocess, cfg)
        other_inputs = prepare(dataset, PipelineSpec.from_config(other), reference.image_size)
        torch_crops = np.asarray(build_cache(spec.cache, other_inputs).images)
    report = compare_layers(model, taps, reference, normalize(torch_crops), normalize(tf_crops))
    reference.close()
    report.update({"model": spec.model.name, "checkpoint": str(source.ckpt.path), "images": len(tf_crops),
                   "reference": reference.name,
                   "preprocess": inputs.settings.to_dict(), "compare_preprocess": cfg.compare_preprocess})
    return save(cfg, report)


def against_exact(spec: RunSpec, dataset) -> dict:
    """A user's module or a transformed model against the exact conversion, layer by layer, on the
    dataset's first images (dataset.limit) as MLPerf's pipeline crops them for the ported model
    (`spec`: the run's spec.RunSpec)."""
    from benchmark.run import model_source, reference_source
    from preprocessing.stage import build_cache, prepare

    source = model_source(spec.model, spec.checkpoint_dir, spec.cache_folder, spec.progress)
    exact_source = reference_source(spec, source) if source.is_module else source
    if source.is_module:
        model = source.torch_model()
        # a port with batch-norm layers against the exact model's own, one whose convolutions hold
        # them (folded) against the folded exact model: each conv pairs with what it computes
        fold = not any(kind(m) == "norm" for m in model.modules())
    else:  # the model the run hands a transform: folded as fold_bn says
        fold = spec.fold_bn
        model = source.torch_model(fold_bn=fold)
    exact = exact_source.torch_model(fold_bn=fold)
    size = source.resolve_size(getattr(getattr(model, "spec", None), "image_size", None))
    if source.is_module:  # refused as the run refuses it: one line, before any image is read
        from benchmark.runtimes.pytorch import check_classes

        check_classes(model, size, source.model.classes, source.ckpt.path)
    transform = spec.transform
    if transform is not None:
        model = transform.apply(model)
    inputs = prepare(dataset, spec.pipeline, size)
    crops = np.asarray(build_cache(spec.cache, inputs).images)

    def nchw(normalize):
        return torch.from_numpy(normalize(crops)).permute(0, 3, 1, 2).contiguous()

    report = compare_modules(model, exact, nchw(source.normalize), nchw(exact_source.normalize))
    report.update({"model": spec.model.name, "checkpoint": str(source.ckpt.path), "images": len(crops),
                   "reference": f"the exact conversion of {exact_source.ckpt.source}",
                   "module": (source.conversion or {}).get("module"),
                   "transform": transform.to_dict() if transform is not None else None,
                   "exact_folded": fold, "preprocess": inputs.settings.to_dict()})
    return report


def save(cfg: DictConfig, report: dict) -> dict:
    """The report as JSON and as a plot, printed as a table."""
    path = Path(cfg.compare_file) if cfg.compare_file else \
        Path("results/compare") / f"{cfg.model.name}-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    plot(report, path.with_suffix(".png"))
    print(format_report(report))
    print(f"report: {path} and {path.with_suffix('.png')}", file=sys.stderr)
    return report


def _preprocess_config(name: str, cfg: DictConfig) -> DictConfig:
    """The preprocess config <name>, resolved against this run's model."""
    from omegaconf import OmegaConf

    from benchmark import conf
    from preprocessing.errors import ConfigError

    try:
        preprocess = conf.load("preprocess", name)
    except FileNotFoundError as e:
        raise ConfigError(f"compare_preprocess={name}: {e}") from None
    merged = OmegaConf.merge({"model": OmegaConf.to_container(cfg.model, resolve=True)},
                             {"preprocess": preprocess})
    return OmegaConf.create(OmegaConf.to_container(merged.preprocess, resolve=True))


if __name__ == "__main__":
    main()
