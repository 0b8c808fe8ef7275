"""No import cycles inside foveal.renderers, counting lazy (function-level) and TYPE_CHECKING imports
(the rules are `import_graph`'s)."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

from import_graph import import_cycles, import_graph

SRC_ROOT = Path(__file__).resolve().parents[1] / "src"


def test_foveal_renderers_has_no_import_cycle() -> None:
    assert import_cycles(SRC_ROOT, "foveal.renderers") == []


def test_lazy_relative_and_type_checking_imports_all_count(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from .sub import b\n",
        "pkg/sub/__init__.py": "from . import c\n",
        "pkg/sub/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n",
        "pkg/sub/c.py": "import pkg.sub.b\nimport json\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(dedent(text), encoding="utf-8")
    assert import_graph(tmp_path, "pkg")["pkg.sub"] == {"pkg.sub.c"}
    assert import_cycles(tmp_path, "pkg") == [["pkg.a", "pkg.sub.b"]]
