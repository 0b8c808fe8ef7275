"""How every trainer benchmark reports: a printed table, and JSON with the command and the environment.

Figures are ratios against a baseline run in the same process (the project's rule), so each result file
names its baseline next to the numbers and carries the exact command that produced it. Standard library
only: `bench_gpu_sft.py` runs on a machine with little more than torch and transformers installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Column:
    """One table column: the row key it shows, its header, and how a value is printed."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def fixed(digits: int) -> Callable[[Any], str]:
    return lambda value: "-" if value is None else f"{value:,.{digits}f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A plain fixed-width table (markdown pipes, so it pastes into an issue as is)."""
    cells = [[column.header for column in columns]]
    cells += [[column.fmt(row.get(column.key)) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/<name>.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    return parser


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command that reproduces a run, from the repository root."""
    relative = Path(script).resolve().relative_to(REPO_ROOT)
    return shlex.join(["python", str(relative), *argv])


def environment() -> dict[str, Any]:
    """What the figures depend on besides the code: interpreter, libraries, machine (and how busy it was:
    CPU timings on a shared machine are only comparable within one run)."""
    libraries = {}
    for name in ("torch", "transformers", "numpy", "pillow", "pydantic", "msgpack", "orjson"):
        try:
            libraries[name] = version(name)
        except PackageNotFoundError:
            libraries[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()),
        "libraries": libraries,
    }


def write_result(name: str, out: Path | None, payload: dict[str, Any]) -> Path:
    """Write `payload` (plus schema version) as JSON to `out` or benchmarks/results/<name>.json."""
    path = out if out is not None else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"schema": SCHEMA_VERSION, "benchmark": name, **payload}
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def emit(name: str, script: str, argv: Sequence[str], out: Path | None, body: dict[str, Any], table: str) -> Path:
    """Print the table and the command, write the JSON; returns the JSON path."""
    command = command_line(script, argv)
    path = write_result(name, out, {"command": command, "environment": environment(), **body})
    print(table)
    print(f"\ncommand: {command}\nresult:  {path}")
    sys.stdout.flush()
    return path
