"""What the orchestrator did at each step, beside the batch it published.

`<run dir>/orchestrator.jsonl`: one line per published step (versions, weight pushes, rewards, times),
the orchestrator's own log; the trainer logs the same rollout metrics with its step in metrics.jsonl.
`<run dir>/rollouts/step_<step>.rollouts.jsonl`: every rollout of the step in brief (environment, example,
reward, stop reason, reply, errors), so failed rollouts are on record even though they are not trained on.
Both are written just before the batch is published; a restarted orchestrator drops the lines of steps
it had not published (it samples them again), so each published step has exactly one line.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict

from foveal.renderers.atomic_files import write_atomic
from foveal.verifiers.rollout import ErrorRecord

from foveal.trainer.rl.orchestrator.collect import CollectedStep
from foveal.trainer.runs.rollouts import RLBatch
from foveal.trainer.runs.layout import ORCHESTRATOR_STEPS_FILE, rollout_records_path



class StepRecord(BaseModel):
    """One published step, as the orchestrator saw it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: int
    policy_version: int
    served_version: int
    pushed: list[tuple[int, int, float]]
    """(version pushed, version the servers reported, seconds) of the pushes made before this step."""
    trainer_step: int
    rollouts: int
    failed: int
    samples: int
    reward_mean: float
    reward_by_environment: dict[str, float]
    inference_seconds: float
    scoring_seconds: float
    weight_sync_seconds: float
    seconds: float


class RolloutBrief(BaseModel):
    """One rollout of a step, in brief."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str
    example_id: str
    sample_index: int
    reward: float
    stop_reason: str
    reply: str
    weight_version: int | None
    errors: tuple[ErrorRecord, ...]


def write_rollouts(run_dir: Path, step: int, collected: CollectedStep) -> Path:
    """The step's rollouts in brief, atomically (rewritten if the step is sampled again after a restart)."""
    lines = []
    for group in collected.groups:
        for rollout in group.rollouts:
            versions = [turn.weight_version for turn in rollout.turns if turn.weight_version is not None]
            brief = RolloutBrief(
                environment=group.label,
                example_id=rollout.example_id,
                sample_index=rollout.sample_index,
                reward=rollout.reward,
                stop_reason=rollout.stop_reason,
                reply=rollout.last_reply(),
                weight_version=min(versions, default=None),
                errors=rollout.errors,
            )
            lines.append(orjson.dumps(brief.model_dump(mode="json")) + b"\n")
    return write_atomic(rollout_records_path(run_dir, step), b"".join(lines))


def step_record(batch: RLBatch, served_version: int, pushed: list[tuple[int, int, float]], trainer_step: int,
                seconds: float) -> StepRecord:  # fmt: skip
    metrics = batch.metrics
    return StepRecord(
        step=batch.step,
        policy_version=batch.policy_version,
        served_version=served_version,
        pushed=pushed,
        trainer_step=trainer_step,
        rollouts=metrics.rollouts,
        failed=metrics.failed,
        samples=len(batch.samples),
        reward_mean=metrics.reward_mean,
        reward_by_environment=metrics.reward_by_environment,
        inference_seconds=metrics.inference_seconds,
        scoring_seconds=metrics.scoring_seconds,
        weight_sync_seconds=metrics.weight_sync_seconds,
        seconds=seconds,
    )


def append_step(run_dir: Path, record: StepRecord) -> None:
    with (run_dir / ORCHESTRATOR_STEPS_FILE).open("ab") as handle:
        handle.write(orjson.dumps(record.model_dump()) + b"\n")


def read_steps(run_dir: Path) -> list[StepRecord]:
    path = run_dir / ORCHESTRATOR_STEPS_FILE
    if not path.is_file():
        return []
    return [StepRecord.model_validate_json(line) for line in path.read_bytes().splitlines() if line.strip()]


def keep_steps_before(run_dir: Path, step: int) -> None:
    """Drop the lines of steps >= `step` (a killed orchestrator may have logged a step it did not publish)."""
    path = run_dir / ORCHESTRATOR_STEPS_FILE
    if path.is_file():
        kept = [record for record in read_steps(run_dir) if record.step < step]
        write_atomic(path, b"".join(orjson.dumps(record.model_dump()) + b"\n" for record in kept))
