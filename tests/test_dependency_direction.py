"""The workspace's one-way dependency rule, checked on the source: configs <- renderers <- verifiers <- trainer.

A lazy import inside a function still breaks `pip install foveal-configs` for a user, so every import
statement in every module counts, not only those executed at import time.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["configs", "renderers", "verifiers", "trainer"]
# Heavy or GPU-bound third-party modules each package may not import (configs and renderers are torch-free).
FORBIDDEN_THIRD_PARTY = {
    "configs": {"torch", "torchvision", "transformers", "vllm", "PIL", "numpy"},
    "renderers": {"torch", "torchvision", "vllm"},
    "verifiers": {"torch", "torchvision", "vllm"},
    "trainer": set(),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def package_sources(pkg: str) -> list[Path]:
    return sorted((ROOT / "packages" / pkg / "src" / "foveal" / pkg).rglob("*.py"))


@pytest.mark.parametrize("pkg", ORDER)
def test_package_imports_only_upstream_foveal_packages_and_allowed_libraries(pkg: str) -> None:
    downstream = {f"foveal.{later}" for later in ORDER[ORDER.index(pkg) + 1 :]}
    sources = package_sources(pkg)
    assert sources, f"no sources found for foveal.{pkg}"
    violations = []
    for path in sources:
        for name in imported_modules(path):
            top = name.split(".")[0]
            if any(name == d or name.startswith(d + ".") for d in downstream) or top in FORBIDDEN_THIRD_PARTY[pkg]:
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("pkg", ORDER)
def test_package_declares_every_foveal_package_it_imports(pkg: str) -> None:
    project = tomllib.loads((ROOT / "packages" / pkg / "pyproject.toml").read_text())["project"]
    declared = {dep.split("[")[0].split(" ")[0].split(">")[0].split("=")[0] for dep in project["dependencies"]}
    used = {
        f"foveal-{name.split('.')[1]}"
        for path in package_sources(pkg)
        for name in imported_modules(path)
        if name.startswith("foveal.") and name.split(".")[1] != pkg
    }
    assert used <= declared, f"foveal-{pkg} imports {sorted(used - declared)} without declaring them"


def test_namespace_package_has_no_init_at_the_foveal_level() -> None:
    for pkg in ORDER:
        assert not (ROOT / "packages" / pkg / "src" / "foveal" / "__init__.py").exists(), pkg
