"""The run-folder handoff: exact msgpack round trips, atomic publication under a concurrent reader, strict decoding."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgpack
import pytest

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.errors import BadEnvelope, ContractError
from foveal.trainer.data.mm_refs import build_mm_refs
from foveal.trainer.data.samples import TrainingSample, loss_weights_from_mask
from foveal.trainer.runs.rollouts import (
    BatchExists,
    BatchTimeout,
    RLBatch,
    RolloutMetrics,
    batch_path,
    published_steps,
    read_batch,
    wait_for_batch,
    write_batch,
)
from foveal.trainer.runs.progress import SyncError, TrainerProgress, read_progress, write_progress

IMAGE = 9


def descriptor() -> RawImageDescriptor:
    return RawImageDescriptor(
        raw_image_uri="file:///run/assets/ab/abababababababababababababababab.png",
        hash="ab" * 16,
        family="qwen2_vl",
        layout_fingerprint="cd" * 16,
        payload={"image_grid_thw": [1, 4, 4], "num_placeholder_tokens": 4},
    )


def rollout_sample(index: int, completion: int = 4) -> TrainingSample:
    tokens = [1, 2, IMAGE, IMAGE, IMAGE, IMAGE, *range(10, 10 + completion)]
    prompt = 6
    sample_id = f"step-rollout-{index}"
    return TrainingSample(
        sample_id=sample_id,
        token_ids=tokens,
        loss_weights=loss_weights_from_mask([0] * prompt + [1] * completion),
        inference_logprobs=[0.0] * prompt + [-0.1 * (i + 1) - index / 7 for i in range(completion)],
        advantages=[0.0] * prompt + [0.5 - index % 2] * completion,
        mm_refs=build_mm_refs(tokens, [(descriptor(), (2, 4))], IMAGE, sample_id=sample_id),
    )


def rl_batch(step: int, samples: int = 3, completion: int = 4) -> RLBatch:
    metrics = RolloutMetrics(rollouts=samples, reward_mean=0.5, reward_by_environment={"shapes": 0.5},
                             completion_tokens_mean=completion, inference_seconds=1.25)  # fmt: skip
    return RLBatch(
        step=step,
        policy_version=step - 1,
        samples=tuple(rollout_sample(i, completion) for i in range(samples)),
        metrics=metrics,
    )


def test_a_batch_round_trips_exactly_through_its_step_file(tmp_path: Path) -> None:
    batch = rl_batch(step=3)
    path = write_batch(tmp_path, batch)
    assert path == tmp_path / "rollouts" / "step_00000003.msgpack" == batch_path(tmp_path, 3)
    assert read_batch(path, 3) == batch
    assert wait_for_batch(tmp_path, 3, timeout_s=1.0) == batch
    assert isinstance(msgpack.unpackb(path.read_bytes()), dict)  # plain msgpack values, nothing else
    assert published_steps(tmp_path) == [3]


def test_a_reader_never_sees_a_partial_batch(tmp_path: Path) -> None:
    """A writer publishes large batches while two readers read each one as soon as its name appears."""
    steps = range(1, 7)
    expected = {step: rl_batch(step, samples=40, completion=3000) for step in steps}  # ~1.5 MB each
    seen: dict[str, list[int]] = {"waiter": [], "scanner": []}
    errors: list[BaseException] = []

    def scanner() -> None:
        read: set[int] = set()
        try:
            while len(read) < len(steps):
                for step in published_steps(tmp_path):
                    if step not in read:
                        assert read_batch(batch_path(tmp_path, step), step) == expected[step]
                        read.add(step)
                        seen["scanner"].append(step)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)

    def writer() -> None:
        for step in steps:
            write_batch(tmp_path, expected[step])

    threads = [threading.Thread(target=scanner), threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    try:
        for step in steps:
            assert wait_for_batch(tmp_path, step, timeout_s=60, poll_s=0.0005) == expected[step]
            seen["waiter"].append(step)
    finally:
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    assert seen == {"waiter": list(steps), "scanner": list(steps)}
    assert sorted(p.name for p in (tmp_path / "rollouts").iterdir()) == [f"step_{s:08d}.msgpack" for s in steps]


def test_a_published_batch_is_never_replaced(tmp_path: Path) -> None:
    write_batch(tmp_path, rl_batch(step=2))
    with pytest.raises(BatchExists, match="step 2"):
        write_batch(tmp_path, rl_batch(step=2, samples=1))
    assert len(read_batch(batch_path(tmp_path, 2), 2).samples) == 3


def test_waiting_for_a_batch_that_never_comes_times_out_naming_the_step(tmp_path: Path) -> None:
    with pytest.raises(BatchTimeout, match=r"trainer.rollout_timeout_s: the rollout batch of step 5") as caught:
        wait_for_batch(tmp_path, 5, timeout_s=0.05, poll_s=0.01)
    assert caught.value.step == 5


def test_the_trainer_waits_until_the_batch_is_published(tmp_path: Path) -> None:
    timer = threading.Timer(0.2, write_batch, args=(tmp_path, rl_batch(step=1)))
    timer.start()
    try:
        assert wait_for_batch(tmp_path, 1, timeout_s=30, poll_s=0.01).step == 1
    finally:
        timer.cancel()


def encoded(batch: RLBatch, **changes: Any) -> bytes:
    obj = batch.model_dump(mode="json") | changes
    return msgpack.packb(obj, use_bin_type=True)


def first_sample_with(batch: RLBatch, **changes: Any) -> dict[str, Any]:
    return batch.samples[0].model_dump(mode="json") | changes


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: encoded(b)[: len(encoded(b)) // 2], "rollout batch"),
        (lambda b: msgpack.packb([1, 2]), "rollout batch"),
        (lambda b: msgpack.packb({"samples": [msgpack.ExtType(1, b"x")]}), "rollout batch"),
        (lambda b: encoded(b, policy_version=b.step), "policy_version"),
        (lambda b: encoded(b, format_version=2), "format_version"),
        (lambda b: encoded(b, pickle="x"), "pickle"),
        (lambda b: encoded(b, samples=[first_sample_with(b, pixel_values=[[0.0]])]), "samples[0]"),
        (lambda b: encoded(b, samples=[first_sample_with(b, advantages=[1.0])]), "samples[0]"),
    ],
)
def test_untrusted_batch_bytes_are_refused_naming_the_field(mutate: Any, field: str, tmp_path: Path) -> None:
    path = batch_path(tmp_path, 4)
    path.parent.mkdir(parents=True)
    path.write_bytes(mutate(rl_batch(step=4)))
    with pytest.raises(ContractError) as caught:
        read_batch(path, 4)
    assert caught.value.field.startswith(field), caught.value


def test_a_file_holding_another_steps_batch_is_refused(tmp_path: Path) -> None:
    path = batch_path(tmp_path, 7)
    path.parent.mkdir(parents=True)
    path.write_bytes(rl_batch(step=6).to_msgpack())
    with pytest.raises(BadEnvelope, match="7, the step the file is named for"):
        read_batch(path, 7)


def test_temporary_files_are_not_published_steps(tmp_path: Path) -> None:
    folder = tmp_path / "rollouts"
    folder.mkdir()
    (folder / ".step_00000009.msgpack.abc.tmp").write_bytes(b"partial")
    (folder / "notes.txt").write_text("x")
    write_batch(tmp_path, rl_batch(step=8))
    assert published_steps(tmp_path) == [8]


def test_trainer_progress_round_trips_and_is_absent_before_the_first_write(tmp_path: Path) -> None:
    assert read_progress(tmp_path) is None
    progress = TrainerProgress(step=4, checkpoint=str(tmp_path / "checkpoints" / "step-00000004"))
    write_progress(tmp_path, progress)
    assert read_progress(tmp_path) == progress
    (tmp_path / "trainer_state.json").write_text('{"step": -1}')
    with pytest.raises(SyncError, match="trainer_state.json"):
        read_progress(tmp_path)
