"""The package's shape, checked: what may import what (README, "Layout").

* typer only in `skylapse.cli`: the services and the pipeline know nothing of a command line;
* the capture side (`skylapse.capture`, the cameras' scene) imports nothing from
  `skylapse.processing`: a station runs without the render code (the shared helpers are in
  `skylapse.imaging`);
* no import cycle between the package's modules.

Imports are read from the source (``ast``): those run when a module loads, i.e. at module level
and not under ``if TYPE_CHECKING:``. An import inside a function is the deliberate lazy kind
(`skylapse.cli`: a command imports the service it runs) and is not an edge of the graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import skylapse

SRC = Path(skylapse.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _load_time_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module loads."""

    def walk(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    yield from walk(node.body)
                yield from walk(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody):
                    yield from walk(block)
                for handler in node.handlers:
                    yield from walk(handler.body)
            elif isinstance(node, ast.With):
                yield from walk(node.body)

    yield from walk(tree.body)


def _imported(name: str, path: Path, *, load_time: bool) -> set[str]:
    """The modules ``name`` imports (any module, not only this package's)."""
    tree = ast.parse(path.read_text())
    nodes = _load_time_imports(tree) if load_time else ast.walk(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                out.add(child if child in MODULES else base)
    return out


def test_typer_only_in_the_command_line_package() -> None:
    users = [
        name
        for name, path in MODULES.items()
        if not name.startswith("skylapse.cli")
        and any(m.split(".")[0] == "typer" for m in _imported(name, path, load_time=False))
    ]
    assert users == []


def test_the_capture_side_imports_no_processing_code() -> None:
    capture_side = ("skylapse.capture", "skylapse.scene", "skylapse.imaging")
    offenders = {
        name: sorted(m for m in _imported(name, path, load_time=False) if "processing" in m)
        for name, path in MODULES.items()
        if name.startswith(capture_side)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycle() -> None:
    graph = {
        name: {m for m in _imported(name, path, load_time=True) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }
    # Tarjan's strongly connected components: any with two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


#: The size rules: a module a reader takes in whole, a function that fits a screen.
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def test_modules_and_functions_stay_small() -> None:
    """Modules up to 600 lines; functions up to 80 lines of code, counted from the first
    statement after the docstring (a typer command's signature is its options' declaration)."""
    too_long: list[str] = []
    for name, path in MODULES.items():
        text = path.read_text()
        if (lines := text.count("\n")) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = node.body
                if len(body) > 1 and isinstance(body[0], ast.Expr):
                    body = body[1:]  # the docstring
                code = (node.end_lineno or node.lineno) - body[0].lineno + 1
                if code > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {code} lines")
    assert too_long == []
