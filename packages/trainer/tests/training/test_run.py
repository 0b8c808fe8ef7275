"""The training-run skeleton on a toy job: checkpoints exactly when due, one metrics line per step, exact resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from foveal.configs import SFTConfig, load_config
from foveal.trainer.training.checkpoint import DataPosition, read_state
from foveal.trainer.training.metrics import RankStep, read_metrics
from foveal.trainer.training.run import RunResult, TrainingRun
from foveal.trainer.training.start import start_run

FAMILY = "qwen3"
TOKENS = torch.arange(3, 11).view(1, -1)


def toy_config(run_dir: Path, model_dir: Path, *overrides: str) -> SFTConfig:
    base = ["--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir), "--trainer.device", "cpu",
            "--trainer.optim.lr", "1e-2", "--trainer.checkpoint.every_steps", "2",
            "--trainer.checkpoint.keep_last", "9", "--logging.plots", "true"]  # fmt: skip
    return load_config(SFTConfig, [], [*base, *overrides])


def run_toy_job(config: SFTConfig, total_steps: int, stop_after: int | None = None) -> RunResult:
    """Each step: two micro-batches of the same tokens, the LM loss, an optimizer step; stops after `stop_after`."""
    start = start_run(config)
    _, model, processor = start.load_policy(config.model)
    run = TrainingRun(start, model, processor, total_steps, name="toy", plot_file="loss.png")
    with run:
        for step, batch, clock in run.steps([TOKENS] * run.steps_left):
            rank_loss = 0.0
            for micro_batch in run.accumulate([batch, batch]):
                loss = run.model(input_ids=micro_batch, labels=micro_batch).loss / 2
                loss.backward()
                rank_loss += loss.item()
            update = run.optimizer_step()
            rank_step = RankStep(rank_loss, 16, 2, 0, 0, 2, seconds=clock.elapsed(), data_wait_seconds=clock.waited)
            run.record(run.step_metrics(step, rank_step, update, epoch=0, loss_tokens=14))
            run.checkpoint_when_due(step, DataPosition(index=step))
            if step == stop_after:
                break
    return run.finish(RunResult)


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(read_state(folder).step for folder in (run_dir / "checkpoints").iterdir())


def test_checkpoints_exactly_when_due_with_the_data_position_and_logs_every_step_once(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    result = run_toy_job(toy_config(tmp_path, tiny_model_dir(FAMILY)), total_steps=5)

    assert checkpoint_steps(tmp_path) == [2, 4, 5]
    assert read_state(tmp_path / "checkpoints" / "step-00000004").data.index == 4
    rows = read_metrics(result.metrics_path)
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]
    assert (result.first_step, result.last_step) == (1, 5)
    assert (result.initial_loss, result.final_loss) == (rows[0]["loss"], rows[-1]["loss"])
    assert result.final_loss < result.initial_loss
    assert result.checkpoint == tmp_path / "checkpoints" / "step-00000005"
    assert (tmp_path / "loss.png").is_file()


def test_a_resumed_run_continues_from_its_last_checkpoint_as_an_uninterrupted_run(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir = tiny_model_dir(FAMILY)
    whole = run_toy_job(toy_config(tmp_path / "whole", model_dir), total_steps=5)
    stopped = run_toy_job(toy_config(tmp_path / "run", model_dir), total_steps=5, stop_after=3)
    assert checkpoint_steps(tmp_path / "run") == [2] and stopped.checkpoint.name == "step-00000002"

    resumed = run_toy_job(toy_config(tmp_path / "run", model_dir, "--trainer.checkpoint.resume", "true"), total_steps=5)

    assert (resumed.first_step, resumed.last_step) == (3, 5)
    rows = read_metrics(resumed.metrics_path)
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]  # step 3 of the stopped run was dropped, then relogged
    expected = [row["loss"] for row in read_metrics(whole.metrics_path)]
    assert [row["loss"] for row in rows] == pytest.approx(expected, rel=1e-6)  # weights, optimizer, schedule restored
    assert checkpoint_steps(tmp_path / "run") == [2, 4, 5]


def test_accumulate_zeroes_gradients_first_and_sums_the_micro_batches(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    config = toy_config(tmp_path, tiny_model_dir(FAMILY))
    start = start_run(config)
    _, model, processor = start.load_policy(config.model)
    run = TrainingRun(start, model, processor, total_steps=1, name="toy", plot_file="loss.png")
    halves = [TOKENS[:, :4], TOKENS[:, 4:]]
    (model(input_ids=halves[0], labels=halves[0]).loss + model(input_ids=halves[1], labels=halves[1]).loss).backward()
    expected = [parameter.grad.clone() for parameter in model.parameters()]
    for _ in range(2):  # the second step starts from zero again
        for micro_batch in run.accumulate(halves):
            model(input_ids=micro_batch, labels=micro_batch).loss.backward()
        assert all(torch.allclose(p.grad, e, atol=1e-7) for p, e in zip(model.parameters(), expected, strict=True))
    run.finish(RunResult)
