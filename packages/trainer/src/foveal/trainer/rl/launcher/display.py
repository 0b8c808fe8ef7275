"""What `foveal rl` shows while it runs: progress bars read from the run folder, on stderr.

The children write their state to the run folder anyway (warm-up metrics, published batches,
trainer_state.json, metrics.jsonl, eval.jsonl), so the launcher reads it there instead of talking to
them: a bar for the warm-up, one for the rollouts the orchestrator published, one for the steps the
trainer finished, and a line with the latest reward, loss, mismatch KL and eval rewards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from foveal.trainer.rl.orchestrator.evaluation import read_records
from foveal.trainer.runs.layout import METRICS_FILE, ORCHESTRATOR_STEPS_FILE
from foveal.trainer.runs.rollouts import published_steps
from foveal.trainer.runs.progress import read_progress

REFRESH_S = 1.0


class RunDisplay:
    """`with RunDisplay(run_dir, max_steps) as display:` then `display.refresh()` as often as convenient."""

    def __init__(self, run_dir: Path, max_steps: int, enabled: bool = True) -> None:
        self.run_dir, self.max_steps = run_dir, max_steps
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),  # last: a narrow terminal cuts the numbers, not the bars
            console=self.console,
            disable=not enabled,
        )
        self._tasks: dict[str, TaskID] = {}
        self._warmup: tuple[Path, int] | None = None
        self._last = 0.0

    def __enter__(self) -> RunDisplay:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.refresh(force=True)
        self.progress.stop()

    def say(self, message: str) -> None:
        """One line above the bars (what the launcher is doing)."""
        self.progress.console.print(message)

    def warmup(self, warmup_dir: Path, steps: int) -> None:
        self._warmup = (warmup_dir / METRICS_FILE, steps)
        self._tasks["warmup"] = self.progress.add_task("warmup sft", total=steps, info="")

    def rl(self) -> None:
        self._tasks["rollouts"] = self.progress.add_task("rollouts", total=self.max_steps, info="")
        self._tasks["train"] = self.progress.add_task("train", total=self.max_steps, info="")

    def refresh(self, force: bool = False) -> None:
        """Re-read the run folder (at most once per REFRESH_S unless forced) and update the bars."""
        if not force and time.monotonic() - self._last < REFRESH_S:
            return
        self._last = time.monotonic()
        if self._warmup is not None and "warmup" in self._tasks:
            path, steps = self._warmup
            row = last_row(path)
            loss = f"loss {row['loss']:.3f}" if row else ""
            self.progress.update(self._tasks["warmup"], completed=row["step"] if row else 0, info=loss)
        if "rollouts" in self._tasks:
            published = published_steps(self.run_dir)
            step = last_row(self.run_dir / ORCHESTRATOR_STEPS_FILE)
            reward = f"reward {step['reward_mean']:.3f} (v{step['policy_version']})" if step else ""
            self.progress.update(self._tasks["rollouts"], completed=published[-1] if published else 0, info=reward)
            progress = read_progress(self.run_dir)
            row = last_row(self.run_dir / METRICS_FILE)
            trained = f"loss {row['loss']:.3f}  kl {row['mismatch_kl']:.0e}" if row else ""
            self.progress.update(self._tasks["train"], completed=progress.step if progress else 0,
                                 info=f"{trained}  {eval_line(self.run_dir, brief=True)}")  # fmt: skip


def eval_line(run_dir: Path, brief: bool = False) -> str:
    """`eval shapes 0.234 (step 0) -> 0.412 (step 40)` for each evaluated environment (brief: no steps)."""
    records = read_records(run_dir)
    parts = []
    for label in dict.fromkeys(record.environment for record in records):
        mine = [record for record in records if record.environment == label]
        steps = [(r.reward_mean, "" if brief else f" (step {r.step})") for r in (mine[0], mine[-1])[: len(mine)]]
        parts.append(f"{label} " + " -> ".join(f"{reward:.3f}{step}" for reward, step in steps))
    return ("eval " + "; ".join(parts)) if parts else ""


def last_row(path: Path, tail_bytes: int = 8192) -> dict[str, Any] | None:
    """The last complete JSON line of a JSONL file (reading only its tail); None when there is none."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - tail_bytes))
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue  # a line cut by the tail window, or being written
    return None
