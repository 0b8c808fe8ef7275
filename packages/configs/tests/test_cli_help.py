"""`foveal --help` and `foveal <cmd> --help` answer without importing torch or any command's job module.

Checked in a fresh interpreter through `sys.modules`, not against the clock. Whatever is installed is
checked: the builtin `config` alone with foveal-configs, every package's commands in the workspace.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from foveal.configs import cli
from foveal.configs.command import Command, LazyRun

PROBE = (
    "import json, sys; from foveal.configs.cli import main; code = main(sys.argv[1:]); "
    "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))"
)
COMMANDS: list[Command] = [*cli.BUILTINS, *cli.discover_commands()]
JOBS = {command.run.target.partition(":")[0] for command in COMMANDS if isinstance(command.run, LazyRun)}


def foveal_help(*argv: str) -> tuple[str, set[str]]:
    """The help text `foveal *argv` prints and the modules it imported."""
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True)
    text, _, last = result.stdout.rstrip().rpartition("\n")
    probe = json.loads(last)
    assert probe["code"] == 0, result.stderr
    return text, set(probe["modules"])


def heavy(modules: set[str]) -> set[str]:
    """The imported modules help must not need: torch, transformers and the commands' job modules."""
    return {name for name in modules if name.split(".")[0] in {"torch", "transformers"} or name in JOBS}


def test_top_level_help_lists_every_command_with_its_summary_and_imports_no_model_code() -> None:
    text, modules = foveal_help("--help")
    words = " ".join(text.split())
    assert [command.name for command in COMMANDS if f"{command.name} {command.help}" not in words] == []
    assert heavy(modules) == set()
    assert "pydantic" not in modules  # no command adds its arguments, so no config model is built


@pytest.mark.parametrize("name", [command.name for command in COMMANDS])
def test_command_help_imports_neither_torch_nor_its_job(name: str) -> None:
    text, modules = foveal_help(name, "--help")
    assert text.startswith(f"usage: foveal {name} ")
    assert heavy(modules) == set()
