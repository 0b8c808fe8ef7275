"""Import cycles inside a package, counting lazy (function-level) and TYPE_CHECKING imports.

A cycle hidden behind a lazy import still ties the modules together: each refactor of one risks an
ImportError or a half-initialised module in the other. Every import statement counts; importing
`pkg.a.b` is not counted as importing the package `pkg.a` (a package re-exporting its own submodules
is not a cycle worth refusing). Shared by each package's `test_import_graph.py` (on pytest's pythonpath).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from importlib.util import resolve_name
from pathlib import Path


def import_cycles(src_root: Path, package: str) -> list[list[str]]:
    """The groups of `package`'s modules that import each other (directly or not), sorted; [] if none."""
    graph = import_graph(src_root, package)
    reach = {module: _reachable(graph, module) for module in graph}
    groups = {tuple(sorted(n for n in reach[m] if m in reach[n])) for m in graph if m in reach[m]}
    return [list(group) for group in sorted(groups)]


def import_graph(src_root: Path, package: str) -> dict[str, set[str]]:
    """Module name -> the modules of `package` it imports anywhere in its source."""
    files = {_module_name(src_root, path): path for path in (src_root / package.replace(".", "/")).rglob("*.py")}
    return {name: set(_imports(name, path, files)) & files.keys() for name, path in files.items()}


def _module_name(src_root: Path, path: Path) -> str:
    parts = path.relative_to(src_root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Every module named by an import statement; `from x import y` names `x.y` when that is a module."""
    home = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_name("." * node.level + (node.module or ""), home) if node.level else node.module or ""
            yield from (f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules `start` reaches through one or more imports."""
    seen: set[str] = set()
    stack = list(graph[start])
    while stack:
        module = stack.pop()
        if module not in seen:
            seen.add(module)
            stack.extend(graph[module])
    return seen
