"""Imports point one way: each package of ``src/cartrm`` imports only itself and the packages before it in the
data flow, and no module imports itself back through others (no cycles), function-level imports included."""

import ast
import sys
from pathlib import Path

import networkx as nx

import cartrm

PACKAGE = Path(cartrm.__file__).parent
# The data flow, first to last; the foundation modules may be imported by every package.
FOUNDATION = ("errors", "io", "lazy", "plotting", "runs")
ORDER = (
    "data",
    "models",
    "capture",
    "circuits",
    "vulnerability",
    "training",
    "evaluation",
    "datasets",
    "report",
    "experiments",
    "cli",
    "__main__",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imported_modules(path: Path) -> set[str]:
    """The cartrm modules ``path`` imports anywhere in its body (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "cartrm"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.split(".")[0] == "cartrm":
                found |= {f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names}
    return found


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for path in PACKAGE.rglob("*.py"):
        for target in imported_modules(path):
            graph.add_edge(module_name(path), target)
    return graph


def layer(module: str) -> str | None:
    """The package of a ``cartrm.X...`` module; None for the top-level ``cartrm`` (the public API)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_place_in_the_declared_order():
    packages = {
        path.stem if path.is_file() else path.name
        for path in PACKAGE.iterdir()
        if path.suffix == ".py" or (path / "__init__.py").exists()
    }
    assert packages - {"__init__"} == set(ORDER) | set(FOUNDATION)


def test_no_package_imports_a_later_phase():
    backward = []
    for source, target in import_graph().edges:
        a, b = layer(source), layer(target)
        if a is None or b is None or a == b or b in FOUNDATION:
            continue
        if a in FOUNDATION or ORDER.index(b) > ORDER.index(a):
            backward.append(f"{source} -> {target}")
    assert not backward, "imports against the data flow:\n" + "\n".join(sorted(backward))


def test_no_module_imports_itself_back():
    graph = import_graph()
    graph.remove_nodes_from([node for node in list(graph) if layer(node) is None])  # the lazy public API
    packages_of_modules = {
        node for node in graph if (PACKAGE / node.split(".", 1)[1].replace(".", "/") / "__init__.py").exists()
    }
    graph.remove_nodes_from(packages_of_modules)  # a package's __init__ re-exports its modules by design
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c + c[:1]) for c in cycles)


def test_the_checker_sees_a_backward_import(tmp_path, monkeypatch):
    module = tmp_path / "cartrm" / "data" / "bad.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from cartrm.training import train\n    from ..report import results\n")
    (tmp_path / "cartrm" / "report").mkdir()
    (tmp_path / "cartrm" / "report" / "results.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "cartrm")
    assert imported_modules(module) == {"cartrm.training", "cartrm.report.results"}
