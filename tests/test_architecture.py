"""The package's layers (docs/architecture.md): every import, at the top of a module or inside a
function, goes to the module's own layer or a lower one; `preprocessing` imports nothing from
`benchmark`; no modules import each other in a circle."""

from __future__ import annotations

import ast
import re

import pytest

from tests.helpers import REPO

# Lowest first. A module may import from its own layer and the ones below it.
LAYERS = [
    ["preprocessing", "benchmark"],  # the ground floor: datasets, pipelines, the crop cache, errors, files
    # (`benchmark` alone is its package docstring: every deeper name has a layer of its own below)
    ["benchmark.conf"],  # the Hydra configs (conf/ at the top of the repository)
    ["benchmark.families"],  # one record per model family, naming its code (imported when asked)
    ["benchmark.formats"],  # what users hand in: checkpoints, downloads, frozen graphs, ONNX graphs
    ["benchmark.nn"],  # PyTorch layers and models, the CPU fusion
    ["benchmark.convert"],  # graph -> PyTorch module, one module per source format and model
    ["benchmark.evaluation"],  # normalisation, the evaluation loop, scoring, results JSON, accuracy logs
    ["benchmark.html"],  # the HTML report's pages and thumbnails
    ["benchmark.runtimes"],  # the model source and each runtime behind one factory
    ["benchmark.spec"],  # the config resolved once into a run's typed parts (RunSpec)
    ["benchmark.run", "benchmark.precision", "benchmark.testing"],  # one run stage by stage; graphs of MLPerf's structure for tests
    ["benchmark.__main__", "benchmark.loadgen", "benchmark.compare", "benchmark.table", "benchmark.export",
     "benchmark.mlperf_log", "benchmark.bench", "benchmark.submission",
     "preprocessing.__main__"],  # the commands users type
]


def module_files() -> dict[str, object]:
    files = {}
    for package, folder in (("benchmark", REPO / "benchmark"), ("preprocessing", REPO / "preprocessing"),
                            ("benchmark.conf", REPO / "conf")):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join([package, *parts])] = path
    return files


def layer(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")
    return best[0]


def imports(path, modules: set[str]) -> set[str]:
    """The package modules `path` imports (the longest known module of each imported name)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the package imports absolutely)"
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for n in range(len(parts), 0, -1):
                if ".".join(parts[:n]) in modules:
                    found.add(".".join(parts[:n]))
                    break
    return found


GRAPH = {m: imports(p, set(module_files())) for m, p in module_files().items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_down_the_layers(module):
    up = [m for m in GRAPH[module] if layer(m) > layer(module)]
    assert not up, f"{module} (layer {layer(module)}) imports {up} from a higher layer"


def test_preprocessing_imports_nothing_from_benchmark():
    bad = {m: sorted(i for i in deps if i.startswith("benchmark")) for m, deps in GRAPH.items()
           if m.startswith("preprocessing")}
    assert not any(bad.values()), bad


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v] - {v}:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert not circles(GRAPH), f"modules importing each other: {circles(GRAPH)}"


def test_the_checks_catch_their_faults(tmp_path):
    """An upward import and a circle are found (so the tests above can fail)."""
    bad = tmp_path / "cache.py"
    bad.write_text("def f():\n    from benchmark.run import setup\n")
    found = imports(bad, set(GRAPH))
    assert found == {"benchmark.run"} and layer("benchmark.run") > layer("preprocessing.cache")
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Runtimes declare what they can do (runtimes.RUNTIMES: Capabilities; runtimes.RuntimeBase: the members
# every runtime has): a capability is never found by probing a runtime, nor a runtime told by its
# name, outside benchmark/runtimes/. The bench's rows (bench/timed.py's KINDS) are named rows of
# its own (several rows run one runtime), so bench/ is left out of the name rule.
PROBE = re.compile(r"(getattr|hasattr)\(\s*[\w.]*(runtime|reference|exact)\b")
NAMES = "torch|tf|onnxruntime|openvino"
NAME_TEST = re.compile(rf"[!=]=\s*[\"']({NAMES})[\"']|[\"']({NAMES})[\"']\s*[!=]=|\bin \([\"']({NAMES})[\"']")


def test_no_runtime_is_probed_or_told_by_its_name_outside_runtimes():
    found = []
    for path in sorted((REPO / "benchmark").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith("benchmark/runtimes/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PROBE.search(line) or (NAME_TEST.search(line) and not relative.startswith("benchmark/bench/")):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
    assert PROBE.search('x = getattr(s.runtime, "padding", None)') and NAME_TEST.search('if cfg.backend != "torch":')


# The layers below the commands' stages read typed parts, never the Hydra config or a run's Setup:
# evaluation/ and html/ take explicit fields (results.RunFacts, a Score, lists), so no parameter there
# may be the config (named cfg, or a DictConfig) or a Setup, typed or not (named s, the name an
# untyped Setup went by: it hid report.run_facts' dependency on run.py from the import rule).
EXPLICIT = ("benchmark/evaluation", "benchmark/html")


def test_evaluation_takes_no_config_and_no_setup():
    found = []
    for folder in EXPLICIT:
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    found += [f"{path.name}: imports {n}" for n in names if n.split(".")[0] == "omegaconf"
                              or n == "benchmark.run"]
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for a in node.args.args + node.args.kwonlyargs:
                        note = ast.unparse(a.annotation) if a.annotation is not None else ""
                        if a.arg in ("cfg", "s") or "DictConfig" in note or "Setup" in note:
                            found.append(f"{path.name}: {node.name}({a.arg}{': ' + note if note else ''})")
    assert not found, found


# Below the commands nothing takes the Hydra config: each command resolves it once into a run's
# typed parts (spec.RunSpec.from_config, which takes preprocessing/stage.py's DatasetSpec,
# PipelineSpec, CacheSpec and runtimes/source.ModelSpec `from_config`) and hands them down. The
# commands' own modules may read it: benchmark/__main__.py, compare.py, export.py, table.py,
# mlperf_log.py, loadgen/, submission/, bench/, preprocessing/__main__.py and sweep.py (the sweep's
# launcher callback); of run.py's stages, only `run` (python -m benchmark's entry) takes it.
COMMANDS = {"benchmark/__main__.py", "benchmark/compare.py", "benchmark/export.py",
            "benchmark/table.py", "benchmark/mlperf_log.py", "preprocessing/__main__.py", "preprocessing/sweep.py"}
COMMAND_PACKAGES = ("benchmark/loadgen/", "benchmark/submission/", "benchmark/bench/")
RESOLVERS = {("preprocessing/stage.py", name) for name in ("from_config", "cache_dir", "require")} | \
    {("benchmark/spec.py", "from_config"), ("benchmark/run.py", "run")}


def test_nothing_below_the_commands_takes_the_config():
    found = []
    for path in sorted([*(REPO / "benchmark").rglob("*.py"), *(REPO / "preprocessing").rglob("*.py")]):
        relative = path.relative_to(REPO).as_posix()
        if relative in COMMANDS or relative.startswith(COMMAND_PACKAGES):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (relative, node.name) in RESOLVERS:
                continue
            for a in node.args.args + node.args.kwonlyargs:
                note = ast.unparse(a.annotation) if a.annotation is not None else ""
                if a.arg == "cfg" or "DictConfig" in note:
                    found.append(f"{relative}: {node.name}({a.arg}{': ' + note if note else ''})")
    assert not found, found
