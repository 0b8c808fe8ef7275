"""Rich progress bars on stderr: training steps (loss, lr, throughput, time left) and counted work.

stderr keeps stdout free for the run summary a script may read. On rank 0 only; other ranks get a bar that
draws nothing, so the loop calls it the same way everywhere.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from foveal.trainer.training.metrics import StepMetrics


class _Bar:
    """A started-and-stopped rich `Progress` (the subclasses add its columns and what advancing means)."""

    _progress: Progress

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._progress.stop()


class TrainingProgress(_Bar):
    """Context manager around a rich `Progress`; `advance(metrics)` after every step."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool, description: str = "sft") -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._task: TaskID = self._progress.add_task(
            description, total=total_steps, completed=start_step, loss="-", lr="-", tps="-"
        )

    def advance(self, metrics: StepMetrics) -> None:
        self._progress.update(
            self._task,
            completed=metrics.step,
            loss=f"{metrics.loss:.4f}",
            lr=f"{metrics.lr:.2e}",
            tps=f"{metrics.tokens_per_second:,.0f}",
        )


class CountProgress(_Bar):
    """A rich bar for work counted in items (prompts answered, files written); `advance(n)` as items finish."""

    def __init__(self, total: int, description: str, enabled: bool) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._task: TaskID = self._progress.add_task(description, total=total)

    def advance(self, count: int) -> None:
        self._progress.update(self._task, advance=count)
