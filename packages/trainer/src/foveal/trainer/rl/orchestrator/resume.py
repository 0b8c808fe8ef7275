"""Where a (re)started orchestrator begins: the first step whose batch is not yet published.

Published batches are never rewritten (`write_batch` refuses), so a step is produced at most once, and
since a batch is published only when complete, an orchestrator killed mid-step loses nothing but the
unpublished step's sampling, which it redoes. A folder that already holds batches is continued only
when the run is resumed (`trainer.checkpoint.resume = true`, the same switch the trainer obeys), so a
new run never silently continues an old one.
"""

from __future__ import annotations

from pathlib import Path

from foveal.trainer.runs.rollouts import published_steps


class RunFolderError(RuntimeError):
    """The run folder's published batches cannot be continued from (not resuming, or a gap)."""


def first_unpublished_step(run_dir: Path, resume: bool) -> int:
    """The step to produce next: one past the published ones, which must be exactly 1..n."""
    steps = published_steps(run_dir)
    if steps and not resume:
        raise RunFolderError(
            f"{run_dir} already holds the rollouts of steps 1..{steps[-1]}: set trainer.checkpoint.resume = true "
            "to continue that run, or start in another logging.run_dir"
        )
    expected = list(range(1, len(steps) + 1))
    if steps != expected:
        missing = sorted(set(range(1, steps[-1] + 1)) - set(steps))
        raise RunFolderError(f"{run_dir}: the published rollouts skip steps {missing}; the folder is damaged")
    return len(steps) + 1
