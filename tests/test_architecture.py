"""The package's shape, read from its source with `ast`: layers that import downward only.

Layers of src/ehrdx, from the bottom. A module may import from its own layer or from any layer below it,
never from one above:

  0 base       errors.py, io.py, paths.py, ranking.py, times.py, tempdirs.py, version.py: errors, atomic writes,
               output paths, per-label ranking metrics, times, temporary directories
  1 data       data/: readers (patient table, MEDS, OMOP), the event store, sample containers, encoders
               that turn samples into model inputs, patient splits, synthetic cohorts
  2 tasks      tasks/: prediction times, label windows and masks, label vocabularies and selection, targets;
               sources/: a patient table or an event store behind one protocol (labels, encoder, samples, inputs)
  3 models     models/: the torch modules and the logistic baseline
  4 train      train/: the training loop, devices, checkpoints, distributed training
  5 evaluate   evaluate/: metrics, small-cell suppression, terminal and HTML reports
  6 estimator  estimator.py, estimator_io.py, artifacts.py, update.py, explain.py, pipeline.py, events_pipeline.py,
               input_settings.py, report.py, demo.py, search.py, pretrain.py, pretrained.py: the classifiers,
               saving and loading, and the runs built on them
  7 surface    ehrdx/__init__.py: the public names (`__all__`), imported lazily
  8 cli        cli.py (or a cli/ package) and __main__.py: parse, call the library, print

Every import counts, function-local and `TYPE_CHECKING` ones included. Besides the direction, no two modules
may import each other through any path (a cycle), no two folders may either, and no module imports a private
name (`_x`) from another module or reads one off an imported module: if another module needs it, it is
public and documented.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ehrdx"

LAYERS = ("base", "data", "tasks", "models", "train", "evaluate", "estimator", "surface", "cli")
FOLDERS = {"data": "data", "tasks": "tasks", "sources": "tasks", "models": "models", "train": "train",
           "evaluate": "evaluate", "cli": "cli"}  # ehrdx/<folder>/ -> layer
TOP_LEVEL = {  # ehrdx/<name>.py -> layer
    "errors": "base", "io": "base", "tempdirs": "base", "version": "base", "paths": "base", "times": "base",
    "ranking": "base",
    "estimator": "estimator", "estimator_io": "estimator", "artifacts": "estimator", "update": "estimator",
    "explain": "estimator", "pipeline": "estimator", "events_pipeline": "estimator", "input_settings": "estimator",
    "report": "estimator", "demo": "estimator", "search": "estimator", "pretrain": "estimator", "pretrained": "estimator",
    "cli": "cli", "__main__": "cli",
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. ehrdx.data.sequences
    target: str  # imported module, e.g. ehrdx.tasks.task
    names: tuple[str, ...]  # names taken from it (from-imports), or attributes read off it
    line: int


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package rooted at `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> str | None:
    parts = module.split(".")[1:]
    if not parts:
        return "surface"
    if len(parts) == 1 and parts[0] in TOP_LEVEL:
        return TOP_LEVEL[parts[0]]
    return FOLDERS.get(parts[0]) if len(parts) > 1 or parts[0] in FOLDERS else None


def folder_of(module: str) -> str | None:
    """The subpackage a module lives in (data, tasks, ...); None for the package's top-level files."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FOLDERS) else None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of an ehrdx module in one file, wherever it is written, plus private attributes read
    off a module bound by an import (`task._ranges`)."""
    top = module.split(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    bound: dict[str, str] = {}  # local name -> module it refers to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    found.append(Import(module, alias.name, (), node.lineno))
                    bound[alias.asname or alias.name] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != top:
                continue
            names = []
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:  # `from ehrdx.data import store`: the submodule
                    found.append(Import(module, f"{target}.{alias.name}", (), node.lineno))
                    bound[alias.asname or alias.name] = f"{target}.{alias.name}"
                else:
                    names.append(alias.name)
            if names or not node.names:
                found.append(Import(module, target, tuple(names), node.lineno))
    for node in ast.walk(tree):  # private attributes read off imported modules
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                target = ".".join([bound[value.id], *reversed(chain)])
                if target in modules and target != module:
                    found.append(Import(module, target, (node.attr,), node.lineno))
    return found


def package_imports(root: Path) -> tuple[dict[str, Path], list[Import]]:
    modules = module_names(root)
    return modules, [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def unknown_layers(modules) -> list[str]:
    return [m for m in modules if layer_of(m) is None]


def upward(imports: list[Import]) -> list[str]:
    out = []
    for imp in imports:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src and dst and LAYERS.index(dst) > LAYERS.index(src):
            out.append(f"{imp.source} (layer {src}) imports {imp.target} (layer {dst}), line {imp.line}")
    return out


def private(imports: list[Import]) -> list[str]:
    return [f"{imp.source} uses {imp.target}.{name}, line {imp.line}" for imp in imports if imp.source != imp.target
            for name in imp.names if name.startswith("_") and not name.startswith("__")]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def module_graph(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if imp.source != imp.target:
            edges.setdefault(imp.source, set()).add(imp.target)
    return edges


def folder_graph(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        a, b = folder_of(imp.source), folder_of(imp.target)
        if a and b and a != b:
            edges.setdefault(a, set()).add(b)
    return edges


@pytest.fixture(scope="module")
def package():
    return package_imports(PACKAGE)


def test_every_module_has_a_layer(package):
    modules, _ = package
    assert not unknown_layers(modules), "give each new module a layer in TOP_LEVEL or FOLDERS (see the docstring)"


def test_imports_go_downward_only(package):
    _, imports = package
    assert upward(imports) == []


def test_no_import_cycle_between_modules(package):
    _, imports = package
    assert cycles(module_graph(imports)) == []


def test_no_import_cycle_between_folders(package):
    _, imports = package
    assert cycles(folder_graph(imports)) == []


def test_no_private_name_used_across_modules(package):
    _, imports = package
    assert private(imports) == []


def test_the_checks_catch_what_they_are_for(tmp_path):
    """A small package with each fault once: the checks name every one of them."""
    root = tmp_path / "ehrdx"
    for folder in ("data", "tasks"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "tasks" / "task.py").write_text("def _ranges():\n    pass\n")
    (root / "data" / "seq.py").write_text("from ehrdx.tasks.task import _ranges\n")  # upward and private
    (root / "data" / "counts.py").write_text("def f():\n    from ehrdx.data import seq\n    return seq\n")
    (root / "estimator.py").write_text("def f():\n    import ehrdx.artifacts\n")  # function-local, in a cycle
    (root / "artifacts.py").write_text("import ehrdx.tasks.task as t\nimport ehrdx.estimator\nt._ranges()\n")
    modules, imports = package_imports(root)
    assert unknown_layers(modules) == []
    assert upward(imports) == ["ehrdx.data.seq (layer data) imports ehrdx.tasks.task (layer tasks), line 1"]
    assert private(imports) == ["ehrdx.artifacts uses ehrdx.tasks.task._ranges, line 3",
                                "ehrdx.data.seq uses ehrdx.tasks.task._ranges, line 1"]
    assert cycles(module_graph(imports)) == [["ehrdx.artifacts", "ehrdx.estimator"]]
    (root / "tasks" / "labels.py").write_text("import ehrdx.data.counts\n")
    _, imports = package_imports(root)
    assert cycles(folder_graph(imports)) == [["data", "tasks"]]


def test_import_ehrdx_is_light():
    """`import ehrdx` loads no torch (nor the rest of the library) until a public name is used."""
    code = ("import sys, ehrdx; print(sorted(m for m in sys.modules if m.split('.')[0] in ('ehrdx', 'torch', "
            "'polars', 'sklearn', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['ehrdx', 'ehrdx.version']"


def test_the_public_surface_resolves():
    import ehrdx

    expected = {"EHRClassifier", "EventClassifier", "load", "open_store", "patient_splits", "update_model",
                "build_report", "explain_sample", "__version__"}
    assert expected <= set(ehrdx.__all__)
    assert set(ehrdx.__all__) <= set(dir(ehrdx))
    for name in ehrdx.__all__:
        assert getattr(ehrdx, name) is not None, name
    from ehrdx.estimator import EventClassifier

    assert ehrdx.EventClassifier is EventClassifier
    with pytest.raises(AttributeError):
        ehrdx.not_a_public_name  # noqa: B018
