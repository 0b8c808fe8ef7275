"""The `foveal` command lives in foveal-configs and finds the other packages' subcommands by entry point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def foveal(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    script = shutil.which("foveal", path=str(Path(sys.executable).parent))
    assert script, "the foveal console script is not installed next to the interpreter"
    env = {**os.environ, "HOME": str(cache)}  # the tiny-model cache defaults to ~/.cache/foveal
    return subprocess.run([script, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_top_level_help_lists_subcommands_from_every_package(tmp_path: Path) -> None:
    result = foveal("--help", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "config" in result.stdout and "smoke" in result.stdout


def test_unknown_subcommand_exits_2_with_a_one_line_reason(tmp_path: Path) -> None:
    result = foveal("no-such-command", cache=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no-such-command" in result.stderr


@pytest.mark.parametrize("family", ["qwen2_5_vl"])
def test_readme_main_job_builds_the_tiny_vlm_and_runs_a_forward_pass(tmp_path: Path, family: str) -> None:
    result = foveal("smoke", "--family", family, cache=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert family in result.stdout
    assert "logits" in result.stdout
