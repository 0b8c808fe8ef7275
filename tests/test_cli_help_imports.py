"""The workspace's `foveal --help` lists every package's commands without importing torch or a job module.

`packages/configs/tests/test_cli_help.py` checks whatever commands are installed; here they must be all of
the workspace's, and each lazy `run` must name a function its module defines (read from the source, so the
check imports no job module either).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from foveal.configs import cli
from foveal.configs.command import Command, LazyRun

COMMANDS = {
    "config",  # foveal-configs
    "eval",  # foveal-verifiers
    "smoke", "sft", "dflash", "rl", "rl-trainer", "rl-orchestrator", "serve", "router", "serve-tinker",  # foveal-trainer
}  # fmt: skip
PROBE = (
    "import sys; from foveal.configs.cli import main; main(['--help']); main(['sft', '--help']); "
    "print('imported:', *sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers'} "
    "or m == 'foveal.trainer.sft.train'))"
)


def test_help_and_sft_help_list_the_commands_and_import_no_torch() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    *text, imported = result.stdout.splitlines()
    assert imported == "imported:"
    assert result.stderr == ""  # no command was skipped
    listed = {line.split()[0] for line in text if line.startswith("    ") and not line.startswith("     ")}
    assert listed == COMMANDS
    assert "usage: foveal sft [-h] [--config FILE]" in text


@pytest.mark.parametrize("command", [*cli.BUILTINS, *cli.discover_commands()], ids=lambda command: command.name)
def test_each_command_runs_a_function_its_module_defines(command: Command) -> None:
    assert isinstance(command.run, LazyRun)
    module, _, function = command.run.target.partition(":")
    tree = ast.parse(source_of(module).read_text())
    assert function in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def source_of(module: str) -> Path:
    """The file of `foveal.<package>.<...>`, found without importing the packages between (some import torch)."""
    _, package, *rest = module.split(".")
    (root,) = find_spec(f"foveal.{package}").submodule_search_locations
    return Path(root, *rest).with_suffix(".py")
