"""The package's folders are layers, and imports only go down them.

``part``'s sub-packages follow the pipeline: the command line and the workflow above the analysis of results,
above evaluation, above training, above the attacks, models and data, above a base every layer may use.
A module may import from its own layer and the ones below it, never from one above — so that, say, the
tables can be read without the trainer and the attacks serve training and evaluation alike — and the
modules' imports form no circle. The imports are read from the source (``ast``), nested ones included, so
the test needs no import of torch and sees an import however deep in a function it hides.
"""

from __future__ import annotations

import ast
from pathlib import Path

import part

PACKAGE = Path(part.__file__).parent

LAYERS = (
    ("base",),
    ("attacks", "models", "data"),
    ("training",),
    ("evaluation",),
    ("analysis",),
    ("workflow",),
    ("cli", "__main__", "__init__"),
)
"""Bottom to top. A name is a sub-package of ``part`` or, for the top layer, a module at its root."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of a ``part`` module (its first name below ``part``)."""
    top = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its folder or name {top!r} is in no layer of tests/test_layers.py's LAYERS; "
                         "put the module in a stage's folder, or add the folder to LAYERS")


def imports_of(path: Path) -> set[str]:
    """The ``part`` modules ``path`` imports: ``from part.x import y`` counts ``part.x.y`` where that is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in MODULES else base)
    return {name for name in found if name == "part" or name.startswith("part.")}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def test_every_module_of_the_package_is_in_a_layer():
    for name in MODULES:
        layer_of(name)


def layer_name(module: str) -> str:
    return "/".join(LAYERS[layer_of(module)])


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a module from a layer above its own, naming both modules and both layers."""
    return [f"{name} (layer {layer_name(name)}) imports {target} (layer {layer_name(target)})"
            for name, targets in sorted(graph.items()) for target in sorted(targets)
            if target != "part" and layer_of(target) > layer_of(name)]


def test_imports_only_go_down_the_layers():
    upward = upward_imports(GRAPH)
    assert not upward, "imports going up the layers:\n" + "\n".join(upward)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected group of modules (Tarjan), as the path that closes it."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_circles():
    graph = {name: {t for t in targets if t in MODULES} for name, targets in GRAPH.items()}
    found = cycles(graph)
    assert not found, "modules importing each other in a circle: " + "; ".join(" <-> ".join(g) for g in found)


def test_the_checks_catch_an_upward_import_and_a_circle():
    """The checks themselves: a made-up graph with one of each is caught, the real one's layers are read."""
    assert layer_of("part.analysis.aggregate") > layer_of("part.evaluation.results") > layer_of("part.base.files")
    assert upward_imports({"part.evaluation.curve": {"part.evaluation.evaluate", "part.analysis.compare"},
                           "part.analysis.compare": {"part.analysis.stats", "part.base.grid"}}) == [
        "part.evaluation.curve (layer evaluation) imports part.analysis.compare (layer analysis)"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
