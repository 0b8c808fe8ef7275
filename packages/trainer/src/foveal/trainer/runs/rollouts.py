"""The run-folder handoff of one step's rollouts, from the orchestrator to the trainer.

The orchestrator writes the batch the trainer trains on at step s as `<run dir>/rollouts/step_00000123.msgpack`
(`write_batch`: temp file, fsync, `os.replace`, see `foveal.renderers.atomic_files`), so the trainer, polling
for that name (`wait_for_batch`), reads either nothing or the complete batch. A batch is msgpack of plain
values: TrainingSamples with their MMRefs, never a tensor and never pickle, decoded as strictly as a
single sample (`TrainingSample.from_msgpack`). Batch files are never overwritten: a step's rollouts are
fixed once published, so a trainer restarted after a kill trains exactly what it would have trained.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from foveal.renderers.atomic_files import write_atomic
from foveal.renderers.contract import contract_error_from_validation
from foveal.renderers.errors import BadEnvelope, ContractError
from foveal.trainer.data.samples import TrainingSample, sample_from_obj
from foveal.trainer.runs.layout import ROLLOUT_BATCH_NAME, ROLLOUTS_DIR, rollout_batch_path

BATCH_FORMAT_VERSION = 1
POLL_S = 0.05
_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class BatchExists(FileExistsError):
    """A step's batch was already published; rollouts of a step are never replaced."""


class BatchTimeout(TimeoutError):
    """No batch for the step appeared in time: the orchestrator is gone, stuck, or too slow."""

    def __init__(self, step: int, path: Path, timeout_s: float) -> None:
        self.step, self.path, self.timeout_s = step, path, timeout_s
        super().__init__(
            f"trainer.rollout_timeout_s: the rollout batch of step {step} ({path}) within {timeout_s:g} s "
            "(is the orchestrator running?)"
        )


class RolloutMetrics(BaseModel):
    """What the orchestrator measured while producing a step's batch; the trainer logs it with the step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rollouts: int = Field(default=0, ge=0, description="Rollouts sampled for the step.")
    failed: int = Field(default=0, ge=0, description="Rollouts that ended in an error (scored 0, not trained on).")
    reward_mean: _Finite = Field(default=0.0, description="Mean reward over the step's rollouts.")
    reward_by_environment: dict[str, _Finite] = Field(default_factory=dict, description="Mean reward per environment.")
    completion_tokens_mean: _Finite = Field(default=0.0, ge=0, description="Mean sampled tokens per rollout.")
    inference_seconds: _Seconds = Field(default=0.0, description="Time spent sampling.")
    scoring_seconds: _Seconds = Field(default=0.0, description="Time spent in the rubrics.")
    weight_sync_seconds: _Seconds = Field(default=0.0, description="Time spent pushing new weights to the servers.")


class RLBatch(BaseModel):
    """The samples of one training step, and the policy version that sampled them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = BATCH_FORMAT_VERSION
    step: int = Field(ge=1, description="The trainer step that trains on this batch (1-based).")
    policy_version: int = Field(
        ge=0, description="The oldest weights any rollout was sampled with: the trainer step that produced them."
    )
    samples: tuple[TrainingSample, ...] = Field(min_length=1)
    metrics: RolloutMetrics = Field(default_factory=RolloutMetrics)

    @model_validator(mode="after")
    def _sampled_before_the_step(self) -> RLBatch:
        if self.policy_version >= self.step:
            expected = f"below the batch's step {self.step} (step s trains on rollouts of weights of step s-1 or older)"
            raise BadEnvelope("policy_version", self.policy_version, expected)
        return self

    def to_msgpack(self) -> bytes:
        return msgpack.packb(self.model_dump(mode="json"), use_bin_type=True)

    @classmethod
    def from_msgpack(cls, data: bytes) -> RLBatch:
        """Decode untrusted bytes: plain msgpack values only; every failure is a ContractError naming the field."""
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_refuse_ext, timestamp=0)
        except ContractError:
            raise
        except (ValueError, TypeError, msgpack.UnpackException):
            raise BadEnvelope("rollout batch", f"<{len(data)} bytes>", "msgpack of a rollout batch") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("samples"), list):
            raise BadEnvelope("rollout batch", type(obj).__name__, "a map with a list of samples")
        samples = []
        for index, sample in enumerate(obj["samples"]):
            try:
                samples.append(sample_from_obj(sample))
            except ContractError as error:
                raise error.restated(f"samples[{index}].{error.field}") from None
        try:
            return cls.model_validate({**obj, "samples": samples})
        except ValidationError as error:
            raise contract_error_from_validation(error) from None


def batch_path(run_dir: Path, step: int) -> Path:
    """Where the batch of `step` is published."""
    return rollout_batch_path(run_dir, step)


def write_batch(run_dir: Path, batch: RLBatch) -> Path:
    """Publish `batch` atomically under its step's name; refuses to replace a published batch."""
    path = batch_path(run_dir, batch.step)
    if path.exists():
        raise BatchExists(f"{path}: the rollouts of step {batch.step} are already published")
    return write_atomic(path, batch.to_msgpack())


def read_batch(path: Path, step: int) -> RLBatch:
    """The batch at `path`, which must be the batch of `step`."""
    try:
        batch = RLBatch.from_msgpack(path.read_bytes())
    except ContractError as error:
        error.add_note(f"in rollout batch {path}")
        raise
    if batch.step != step:
        raise BadEnvelope(f"{path}.step", batch.step, f"{step}, the step the file is named for")
    return batch


def wait_for_batch(run_dir: Path, step: int, timeout_s: float, poll_s: float = POLL_S) -> RLBatch:
    """Poll for the batch of `step` until it is published (then read it) or `timeout_s` passes."""
    path = batch_path(run_dir, step)
    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        if time.monotonic() >= deadline:
            raise BatchTimeout(step, path, timeout_s)
        time.sleep(poll_s)
    return read_batch(path, step)


def published_steps(run_dir: Path) -> list[int]:
    """Steps whose batch is published, ascending (temporary files never match)."""
    folder = run_dir / ROLLOUTS_DIR
    if not folder.is_dir():
        return []
    return sorted(int(match.group(1)) for p in folder.iterdir() if (match := ROLLOUT_BATCH_NAME.fullmatch(p.name)))


def _refuse_ext(code: int, data: bytes) -> Any:
    raise BadEnvelope("rollout batch", f"<msgpack ext type {code}>", "plain msgpack values (no extension types)")
