"""Mutation testing of the core math and contract modules with mutmut: do their unit tests notice a changed line?

    uv run --locked --group mutation python benchmarks/mutation.py                      # every module below
    uv run --locked --group mutation python benchmarks/mutation.py --modules advantages packing

Not part of the default test run (minutes per module). For each module: a scratch folder
`build/mutation/<module>/` holding a copy of its package's `src/` tree, that module's fast unit tests (with
the conftest files they need) and a `[tool.mutmut]` config that mutates that one file and runs
those tests; then `mutmut run --max-children N` there (`--max-children`, default 1: the machine is
shared), and every mutant's verdict read back from mutmut's `.meta` files, with the diff of each survivor
from `mutmut show`. The copied
`foveal/<package>` comes first on sys.path, so it shadows the editable install (`foveal` is a namespace package).

Score = (killed + timeout) / mutants: a mutant that makes a test hang has been noticed. mutmut only mutates
code inside functions (not module constants) and runs, per mutant, the tests that called the mutated function.
Hypothesis runs with a fixed seed, so a rerun gives the same verdicts. Prints a table, writes JSON
(`benchmarks/results/mutation.json` unless `--out`); the survivors' diffs are in the JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "trainer"))
from trainer_report import REPO_ROOT, RESULTS_DIR, Column, base_parser, emit, fixed, format_table, percent  # noqa: E402

NAME = "mutation"
SCRATCH = REPO_ROOT / "build" / "mutation"
TARGET_SCORE = 0.90
# mutmut's exit codes of a mutant's test run, as its `stats.status_by_exit_code` names them.
VERDICTS = {1: "killed", 3: "killed", 0: "survived", 5: "no_tests", 33: "no_tests", 34: "skipped", 36: "timeout",
            -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not_checked"}  # fmt: skip


@dataclass(frozen=True)
class Module:
    """One module under mutation: its package, its file under the package's src/, and the tests that pin it."""

    name: str
    package: str
    files: tuple[str, ...]
    tests: tuple[str, ...]


MODULES = (
    Module("advantages", "trainer", ("foveal/trainer/rl/advantages.py",), ("rl/test_advantages.py",)),
    Module("rl_loss", "trainer", ("foveal/trainer/rl/loss.py",),
           ("rl/test_loss.py", "rl/test_direction.py", "rl/test_entropy_bonus.py")),
    Module("sft_loss", "trainer", ("foveal/trainer/training/loss.py",), ("training/test_loss.py",)),
    Module("packing", "trainer", ("foveal/trainer/data/packing.py",), ("data/test_packing.py",)),
    Module("mm_refs", "trainer", ("foveal/trainer/data/mm_refs.py",), ("data/test_mm_refs.py",)),
    Module("contract", "renderers", ("foveal/renderers/contract.py",),
           ("test_contract.py", "test_contract_properties.py")),
    Module("layout", "renderers",
           tuple(f"foveal/renderers/layout/{name}.py" for name in ("qwen_vl", "smart_resize", "spec", "image_layout")),
           ("test_layout_spec.py", "test_layout_hf_parity.py")),
)  # fmt: skip


def prepare(module: Module) -> Path:
    """A fresh scratch project for `module`: src copy, its tests and conftests, and the mutmut + pytest config."""
    folder = SCRATCH / module.name
    shutil.rmtree(folder, ignore_errors=True)
    package = REPO_ROOT / "packages" / module.package
    shutil.copytree(package / "src", folder / "src", ignore=shutil.ignore_patterns("__pycache__"))
    tests = package / "tests"
    for relative in (*module.tests, *_conftests(tests, module.tests)):
        target = folder / "tests" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tests / relative, target)
    only = ", ".join(json.dumps(f"src/{file}") for file in module.files)
    selected = ", ".join(json.dumps(f"tests/{test}") for test in module.tests)
    (folder / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = [{only}]\n"
        f"pytest_add_cli_args_test_selection = [{selected}]\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "--hypothesis-seed=0"]\n'
        'process_isolation = "forkserver"  # torch is not fork-safe once its thread pool runs\n'
        "use_git_change_detection = false\n\n"
        "[tool.pytest.ini_options]\n"
        'addopts = "--import-mode=importlib"\n'
        'filterwarnings = ["error::pytest.PytestUnraisableExceptionWarning"]\n'
    )
    return folder


def _conftests(tests: Path, selected: Sequence[str]) -> list[str]:
    """conftest.py files from the tests folder down to each selected test's folder."""
    found = []
    for test in selected:
        folder = Path(test).parent
        for parent in [*reversed(folder.parents), folder]:
            if (tests / parent / "conftest.py").is_file():
                found.append(str(parent / "conftest.py"))
    return sorted(set(found))


def run_module(module: Module, mutmut: str, children: int = 1) -> dict[str, Any]:
    """Run mutmut on `module` in its scratch project with `children` workers; its counts, score, survivors."""
    folder = prepare(module)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    command = [mutmut, "run", "--max-children", str(children)]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (folder / "mutmut-run.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"mutmut failed on {module.name} (exit {done.returncode}); see {folder / 'mutmut-run.log'}")
    verdicts = {}
    for file in module.files:
        meta = json.loads((folder / "mutants" / "src" / f"{file}.meta").read_text())
        verdicts.update({key: VERDICTS.get(code, "suspicious") for key, code in meta["exit_code_by_key"].items()})
    counts = Counter(verdicts.values())
    survivors = sorted((key for key, verdict in verdicts.items() if verdict != "killed" and verdict != "timeout"),
                       key=_natural)  # fmt: skip
    total = len(verdicts)
    return {
        "module": module.name,
        "files": [f"packages/{module.package}/src/{file}" for file in module.files],
        "tests": [f"packages/{module.package}/tests/{test}" for test in module.tests],
        "mutants": total,
        **{key: counts.get(key, 0) for key in ("killed", "survived", "timeout", "no_tests", "suspicious", "skipped")},
        "score": (counts["killed"] + counts["timeout"]) / total if total else None,
        "seconds": seconds,
        "survivors": [
            {"mutant": key, "verdict": verdicts[key], "diff": _show(mutmut, folder, key)} for key in survivors
        ],
    }


def _show(mutmut: str, folder: Path, mutant: str) -> str:
    done = subprocess.run([mutmut, "show", mutant], cwd=folder, capture_output=True, text=True)
    return "\n".join(line for line in done.stdout.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def _natural(key: str) -> tuple[str, int]:
    stem, _, number = key.rpartition("_")
    return stem, int(number) if number.isdigit() else 0


def merged_rows(path: Path, fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`fresh` rows with the rows of the other modules an earlier run wrote to `path`, in MODULES order."""
    earlier = json.loads(path.read_text())["rows"] if path.is_file() else []
    by_module = {row["module"]: row for row in [*earlier, *fresh]}
    return [by_module[module.name] for module in MODULES if module.name in by_module]


def main(argv: Sequence[str] | None = None) -> Path:
    parser = base_parser(__doc__.splitlines()[0])
    names = [module.name for module in MODULES]
    parser.add_argument("--modules", nargs="+", choices=names, default=names, help="modules to run (default: all)")
    keep = "keep the other modules' rows of an existing result file, replacing only these"
    parser.add_argument("--update", action="store_true", help=keep)
    parser.add_argument("--max-children", type=int, default=1, help="mutmut workers (default 1: a shared machine)")
    args = parser.parse_args(argv)
    beside = shutil.which("mutmut", path=str(Path(sys.executable).parent))
    mutmut = beside or shutil.which("mutmut")
    if mutmut is None:
        raise SystemExit("mutmut is not installed: run with `uv run --locked --group mutation ...`")
    rows = []
    for module in (m for m in MODULES if m.name in args.modules):
        print(f"mutation: {module.name} ({', '.join(module.files)})", flush=True)
        rows.append(run_module(module, mutmut, args.max_children))
        row = rows[-1]
        print(f"  {row['killed']} killed, {row['survived']} survived, {row['timeout']} timeout of {row['mutants']} "
              f"({percent(row['score'])}) in {row['seconds']:.0f} s", flush=True)  # fmt: skip
    if args.update:
        rows = merged_rows(args.out or RESULTS_DIR / f"{NAME}.json", rows)
    columns = [Column("module", "module"), Column("mutants", "mutants"), Column("killed", "killed"),
               Column("survived", "survived"), Column("timeout", "timeout"), Column("no_tests", "no tests"),
               Column("score", "score", percent), Column("seconds", "seconds", fixed(0))]  # fmt: skip
    mutants = sum(row["mutants"] for row in rows)
    noticed = sum(row["killed"] + row["timeout"] for row in rows)
    summary = {
        "baseline": "every mutant noticed (score 1.0); the score is the share of mutants a test noticed",
        "target_score": TARGET_SCORE,
        "score": noticed / mutants if mutants else None,
        "below_target": [row["module"] for row in rows if row["score"] is not None and row["score"] < TARGET_SCORE],
    }
    modules = [row["module"] for row in rows]
    settings = {"tool": f"mutmut {version('mutmut')}", "modules": modules, "max_children": args.max_children,
                "hypothesis_seed": 0}
    body = {"settings": settings, "summary": summary, "rows": rows}
    return emit(NAME, __file__, list(argv if argv is not None else sys.argv[1:]), args.out, body,
                format_table(rows, columns))  # fmt: skip


if __name__ == "__main__":
    main()
