"""The run folder's names live in `foveal.trainer.runs.layout` alone, and its path helpers agree with its parsers."""

from __future__ import annotations

import ast
from pathlib import Path

import foveal.trainer
from foveal.trainer.runs import layout
from foveal.trainer.training.checkpoint import _step_of

TRAINER_SRC = Path(foveal.trainer.__file__).parent


def _layout_names() -> set[str]:
    """The file and folder names the layout module defines (string constants, and Path constants' parts)."""
    names = set()
    for value in vars(layout).values():
        if isinstance(value, str) and value:
            names.add(value)
        elif isinstance(value, Path):
            names.update(value.parts)
    return names


def test_no_module_spells_a_run_folder_file_name_itself() -> None:
    names = {name for name in _layout_names() if "." in name}  # file names: metrics.jsonl, run_meta.json, ...
    found = []
    for path in TRAINER_SRC.rglob("*.py"):
        if path == Path(layout.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(TRAINER_SRC)}:{node.lineno} {node.value!r}")
    assert not found, "run-folder names spelled outside runs/layout.py:\n" + "\n".join(found)


def test_checkpoint_names_sort_by_step_and_parse_back() -> None:
    steps = [3, 10, 200, 12_345_678]
    names = [layout.checkpoint_name(step) for step in steps]
    assert sorted(names) == names
    assert [_step_of(Path(name)) for name in names] == steps


def test_rollout_batch_path_is_what_the_trainer_recognizes(tmp_path: Path) -> None:
    path = layout.rollout_batch_path(tmp_path, 42)
    match = layout.ROLLOUT_BATCH_NAME.fullmatch(path.name)
    assert path.parent == tmp_path / layout.ROLLOUTS_DIR
    assert match is not None and int(match.group(1)) == 42
    assert layout.ROLLOUT_BATCH_NAME.fullmatch(layout.rollout_records_path(tmp_path, 42).name) is None


def test_configured_checkpoint_folder_wins(tmp_path: Path) -> None:
    assert layout.checkpoints_dir(tmp_path) == tmp_path / layout.CHECKPOINTS_DIR
    assert layout.checkpoints_dir(tmp_path, tmp_path / "elsewhere") == tmp_path / "elsewhere"
