"""Eval outputs on disk: one JSON rollout per line, and the summary as JSON.

Each line is a whole `Rollout` (token ids, logprobs, image descriptors, reward, metrics, errors), so a
results file can be re-scored, re-reported or turned into training data without the server. Files are
written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson

from foveal.renderers.atomic_files import write_atomic
from foveal.verifiers.eval.summary import Summary
from foveal.verifiers.rollout import Rollout

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"


def write_results(folder: Path, groups: Sequence[Sequence[Rollout]], summary: Summary) -> tuple[Path, Path]:
    """Write `results.jsonl` and `summary.json` into `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = b"".join(orjson.dumps(r.model_dump(mode="json")) + b"\n" for group in groups for r in group)
    results = write_atomic(folder / RESULTS_FILE, lines, durable=False)
    summary_json = orjson.dumps(summary.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
    return results, write_atomic(folder / SUMMARY_FILE, summary_json, durable=False)


def read_results(path: Path) -> list[Rollout]:
    """The rollouts of a results file, validated."""
    return [Rollout.model_validate_json(line) for line in path.read_bytes().splitlines() if line.strip()]
