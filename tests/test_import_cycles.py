"""No import cycle between the modules of the four packages. Checked on the source.

Every ``import`` / ``from ... import`` of every module is parsed with ``ast``, at module level and
inside functions alike (a function-level import only hides a cycle until the function runs). An
edge goes from a module to each module it names: ``from a.b import c`` names ``a.b.c`` when ``c``
is a submodule, else ``a.b``. The implicit import of a parent package is not an edge (every
submodule would otherwise close a cycle with its package's ``__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("olivine_losses", "olivine_data", "olivine_models", "olivine_train")


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the four packages."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        src = ROOT / "packages" / package.replace("_", "-") / "src"
        for path in sorted((src / package).rglob("*.py")):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules that module ``name`` (file ``path``) names in its imports."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined in ``target`` itself
                found.add(target)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_package_has_modules_in_the_graph() -> None:
    graph = import_graph()
    for package in PACKAGES:
        assert any(m.startswith(package + ".") for m in graph), package
    # the graph has edges at all (a parser that finds nothing would pass the cycle test)
    assert sum(len(v) for v in graph.values()) > 100


def test_no_import_cycle_between_modules() -> None:
    assert find_cycles(import_graph()) == []


def test_the_check_finds_a_planted_function_level_cycle(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    b = tmp_path / "b.py"
    a.write_text("import pkg.b\n")
    b.write_text("def f():\n    from pkg import a\n")
    known = {"pkg.a", "pkg.b"}
    graph = {
        "pkg.a": imported_modules("pkg.a", a, known),
        "pkg.b": imported_modules("pkg.b", b, known),
    }
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert find_cycles(graph) == [["pkg.a", "pkg.b"]]
