"""The house rules of streaming/, learners/ and services/, read from the source with ``ast``:

- imports flow one way, ``services`` → ``learners`` → ``streaming``, never upward;
- no import circle among their modules;
- no file over 400 lines, no function over 60 lines.

Every import statement counts, at module level or inside a function; only those under
``if TYPE_CHECKING:`` are excepted (they never run). ``importlib`` calls with a string (a
package ``__init__`` that exports its submodules lazily) are not import statements, except a
package that imports every public module of its folder at once (``iter_modules(__path__)``, as
``learners.strategies`` does): that package imports each of them.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The floors, bottom first: a package may import those before it, never those after.
FLOORS = ("streaming", "learners", "services")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


@dataclass(frozen=True)
class Import:
    """One import statement: the module it names, where it stands."""

    target: str
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    """Every module of the three packages, by dotted name."""
    return {_module_name(p): p for floor in FLOORS for p in sorted((ROOT / floor).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under ``node`` at any depth, skipping ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                if isinstance(stmt, ast.Import | ast.ImportFrom):
                    yield stmt
                yield from _statements(stmt)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _statements(child)


def _imports(name: str, path: Path) -> list[Import]:
    """The modules ``name`` imports (``from a import b`` names ``a.b`` when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[Import] = []
    for stmt in _statements(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(stmt, ast.Import):
            out += [Import(alias.name, stmt.lineno) for alias in stmt.names]
            continue
        base = stmt.module or ""
        if stmt.level:
            anchor = package.split(".")[: len(package.split(".")) - (stmt.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        out += [Import(f"{base}.{alias.name}" if base else alias.name, stmt.lineno) for alias in stmt.names]
    return out


def _discovers_its_modules(path: Path) -> bool:
    """Whether a package ``__init__`` imports every module of its folder (``iter_modules``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return path.name == "__init__.py" and any(
        isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "iter_modules"
        for node in ast.walk(tree)
    )


def _resolve(target: str, modules: set[str]) -> str | None:
    """The most specific known module ``target`` names (``a.b.C`` → ``a.b``), or None."""
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _graph() -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    """module → {imported module: line of the first such import}, within the three packages."""
    sources = _sources()
    modules = set(sources)
    graph: dict[str, dict[str, int]] = {name: {} for name in sources}
    for name, path in sources.items():
        for imp in _imports(name, path):
            target = _resolve(imp.target, modules)
            if target is not None and target != name:
                graph[name].setdefault(target, imp.line)
        if _discovers_its_modules(path):
            for module in modules:
                public = not module.rpartition(".")[2].startswith("_")
                if public and module.rpartition(".")[0] == name:
                    graph[name].setdefault(module, 1)
    return graph, sources


def _floor(module: str) -> int:
    return FLOORS.index(module.split(".")[0])


def _where(sources: dict[str, Path], module: str, line: int) -> str:
    return f"{sources[module].relative_to(ROOT)}:{line}"


def test_imports_never_go_up_a_floor():
    sources = _sources()
    upward = []
    for name, path in sources.items():
        for imp in _imports(name, path):
            top = imp.target.split(".")[0]
            if top in FLOORS and FLOORS.index(top) > _floor(name):
                upward.append(f"{_where(sources, name, imp.line)}: {name} imports {imp.target}")
    assert upward == [], "imports flow services -> learners -> streaming only:\n" + "\n".join(upward)


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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


def _cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest circle through the first module of ``component``."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    chain = [v]
                    while chain[-1] != start:
                        chain.append(previous[chain[-1]])
                    return [start, *reversed(chain[:-1]), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no circle found in {component}")


def test_a_package_that_discovers_its_modules_imports_each_of_them():
    graph, _ = _graph()
    assert {"learners.strategies.naive", "learners.strategies.er_ace"} <= set(graph["learners.strategies"])
    assert "learners.strategies._registry" in graph["learners.strategies"]  # a plain import


def test_no_import_circle():
    graph, sources = _graph()
    circles = []
    for component in _strongly_connected(graph):
        chain = _cycle(graph, component)
        steps = [f"  {a} -> {b} ({_where(sources, a, graph[a][b])})" for a, b in itertools.pairwise(chain)]
        circles.append(f"circle among {', '.join(component)}:\n" + "\n".join(steps))
    assert circles == [], "import circles (imports under TYPE_CHECKING excepted):\n" + "\n".join(circles)


def test_no_file_over_the_limit():
    too_long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in _sources().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    ]
    assert too_long == [], f"files over {MAX_FILE_LINES} lines:\n" + "\n".join(too_long)


def test_no_function_over_the_limit():
    too_long = []
    for path in _sources().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert too_long == [], f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)


def test_the_checks_see_what_they_guard(tmp_path: Path):
    """The parser finds function-level imports, skips TYPE_CHECKING ones and resolves relative
    imports; the circle search finds a circle (a guard on the guard)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import services.a\nelse:\n    import services.b\n"
        "def f():\n    from . import c\n    from ..learners import d\n"
    )
    tree = ast.parse(source)
    names = [alias.name for stmt in _statements(tree) for alias in stmt.names]
    assert names == ["TYPE_CHECKING", "services.b", "c", "d"]
    module = tmp_path / "mod.py"
    module.write_text("from . import c\nfrom ..x import d\nimport e.f\n")
    assert [i.target for i in _imports("pkg.sub.mod", module)] == ["pkg.sub.c", "pkg.x.d", "e.f"]
    init = tmp_path / "__init__.py"
    init.write_text("def lazy():\n    from .a import b\n")
    assert [i.target for i in _imports("pkg.sub", init)] == ["pkg.sub.a.b"]
    assert _resolve("pkg.sub.a.b", {"pkg.sub", "pkg.sub.a"}) == "pkg.sub.a"
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
    assert _cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
