"""No import cycles inside foveal.trainer, counting lazy (function-level) and TYPE_CHECKING imports."""

from __future__ import annotations

from pathlib import Path

from import_graph import import_cycles

SRC_ROOT = Path(__file__).resolve().parents[1] / "src"


def test_foveal_trainer_has_no_import_cycle() -> None:
    assert import_cycles(SRC_ROOT, "foveal.trainer") == []
