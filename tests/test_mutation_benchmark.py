"""benchmarks/mutation.py stays runnable: every module it names exists, with tests, and its scratch project is
what mutmut needs (mutmut itself is in the `mutation` dependency group, not installed by default, so the
mutation run is not repeated here)."""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("foveal_benchmark_mutation", ROOT / "benchmarks" / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script executes
    spec.loader.exec_module(module)
    return module


def test_every_module_under_mutation_and_its_tests_exist(mutation: ModuleType) -> None:
    for module in mutation.MODULES:
        package = ROOT / "packages" / module.package
        assert all((package / "src" / file).is_file() for file in module.files), module
        assert all((package / "tests" / test).is_file() for test in module.tests), module


def test_the_scratch_project_mutates_one_module_and_runs_only_its_tests(
    mutation: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mutation, "SCRATCH", tmp_path)
    module = next(m for m in mutation.MODULES if m.name == "rl_loss")
    folder = mutation.prepare(module)
    config = tomllib.loads((folder / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert config["only_mutate"] == ["src/foveal/trainer/rl/loss.py"]
    assert config["pytest_add_cli_args_test_selection"] == [f"tests/{test}" for test in module.tests]
    assert (folder / "src" / "foveal" / "trainer" / "__init__.py").is_file()  # shadows the editable install
    assert not (folder / "src" / "foveal" / "__init__.py").exists()  # `foveal` stays a namespace package
    copied = sorted(str(path.relative_to(folder / "tests")) for path in (folder / "tests").rglob("*.py"))
    assert copied == sorted(["conftest.py", *module.tests])


def test_a_partial_rerun_replaces_only_its_modules_rows(mutation: ModuleType, tmp_path: Path) -> None:
    earlier = tmp_path / "mutation.json"
    rows = [{"module": "contract", "score": 0.5}, {"module": "advantages", "score": 0.7}]
    earlier.write_text(json.dumps({"rows": rows}))
    rows = mutation.merged_rows(earlier, [{"module": "advantages", "score": 0.9}])
    assert rows == [{"module": "advantages", "score": 0.9}, {"module": "contract", "score": 0.5}]
