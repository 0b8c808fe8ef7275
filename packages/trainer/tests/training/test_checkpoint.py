"""Checkpoints: exact round trip without pickle, atomic publication, keep_last, and exact resume of a run."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from foveal.configs import SFTConfig, load_config
from foveal.configs.trainer import CheckpointConfig, OptimConfig, ScheduleConfig
from foveal.trainer.training.checkpoint import Checkpointer, CheckpointError, DataPosition, TrainingState, read_state
from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.training.metrics import read_metrics
from foveal.trainer.training.optim import build_optimizer, build_scheduler
from foveal.trainer.sft.train import run_sft

SINGLE = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
FAMILY = "qwen2_5_vl"


def sft_config(run_dir: Path, model_dir: Path, *overrides: str) -> SFTConfig:
    """A few-step CPU run on generated shapes with the session's tiny model."""
    base = ["--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir), "--sft.dataset", "shapes:64",
            "--sft.batch_size", "8", "--sft.max_steps", "6", "--trainer.seq_len", "256",
            "--trainer.micro_batch_tokens", "256", "--trainer.optim.lr", "2e-3", "--trainer.device", "cpu",
            "--trainer.checkpoint.every_steps", "3", "--trainer.checkpoint.keep_last", "5"]  # fmt: skip
    return load_config(SFTConfig, [], [*base, *overrides])


def trained_one_step(
    model_dir: Path,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    model = AutoModelForImageTextToText.from_pretrained(model_dir).train()
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3))
    scheduler = build_scheduler(optimizer, ScheduleConfig(warmup_steps=2), total_steps=10)
    ids = torch.arange(12).view(1, -1)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def test_round_trip_restores_weights_optimizer_schedule_rng_and_data_position(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir = tiny_model_dir(FAMILY)
    model, optimizer, scheduler = trained_one_step(model_dir)
    checkpointer = Checkpointer(tmp_path, CheckpointConfig(resume=True), SINGLE)
    state = TrainingState(step=7, data=DataPosition(epoch=1, index=5, shuffle_seed=3))
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    folder = checkpointer.save(model, AutoProcessor.from_pretrained(model_dir), optimizer, scheduler, state)
    expected_draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))

    restored = AutoModelForImageTextToText.from_pretrained(folder)
    new_optimizer = build_optimizer(restored, OptimConfig(lr=1e-3))
    new_scheduler = build_scheduler(new_optimizer, ScheduleConfig(warmup_steps=2), total_steps=10)
    assert (
        checkpointer.restore(checkpointer.resume_point(), restored, new_optimizer, new_scheduler, TrainingState())
        == state
    )
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected_draws
    for (name, a), b in zip(model.named_parameters(), restored.parameters(), strict=True):
        assert torch.equal(a, b), name
        assert optimizer.state[a].keys() == new_optimizer.state[b].keys(), name  # the vision tower had no gradient
        for key, value in optimizer.state[a].items():
            assert torch.equal(value, new_optimizer.state[b][key]), (name, key)
    assert sum(bool(optimizer.state[p]) for p in model.parameters()) > 20
    assert new_scheduler.get_last_lr() == scheduler.get_last_lr()
    assert new_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_checkpoint_folder_loads_with_from_pretrained_and_holds_no_pickle(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir = tiny_model_dir(FAMILY)
    model, optimizer, scheduler = trained_one_step(model_dir)
    folder = Checkpointer(tmp_path, CheckpointConfig(), SINGLE).save(
        model, AutoProcessor.from_pretrained(model_dir), optimizer, scheduler, TrainingState(step=1)
    )
    suffixes = {path.suffix for path in folder.rglob("*") if path.is_file()}
    assert suffixes <= {".json", ".safetensors", ".jinja"}, suffixes
    processor = AutoProcessor.from_pretrained(folder)
    assert processor.image_token_id == AutoProcessor.from_pretrained(model_dir).image_token_id
    reloaded = AutoModelForImageTextToText.from_pretrained(folder)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))


def test_keep_last_prunes_old_checkpoints_and_latest_ignores_incomplete_folders(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir = tiny_model_dir(FAMILY)
    model, optimizer, scheduler = trained_one_step(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    checkpointer = Checkpointer(tmp_path, CheckpointConfig(keep_last=2, resume=True), SINGLE)
    for step in (2, 4, 6):
        checkpointer.save(model, processor, optimizer, scheduler, TrainingState(step=step))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004", "step-00000006"]
    (tmp_path / ".tmp-step-00000008").mkdir()  # a crash while writing step 8
    (tmp_path / "step-00000009").mkdir()  # a folder without its trainer state is not a checkpoint
    assert checkpointer.latest() == tmp_path / "step-00000006"
    assert read_state(checkpointer.latest()).step == 6


def test_due_every_n_steps_and_after_the_last() -> None:
    checkpointer = Checkpointer(Path("unused"), CheckpointConfig(every_steps=4), SINGLE)
    assert [s for s in range(1, 11) if checkpointer.due(s, last_step=10)] == [4, 8, 10]


def test_fresh_run_refuses_a_folder_that_holds_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "step-00000003").mkdir()
    (tmp_path / "step-00000003" / "trainer_state.json").write_text(json.dumps(TrainingState(step=3).model_dump()))
    with pytest.raises(CheckpointError, match="trainer.checkpoint.resume"):
        Checkpointer(tmp_path, CheckpointConfig(resume=False), SINGLE).resume_point()
    assert Checkpointer(tmp_path, CheckpointConfig(resume=True), SINGLE).resume_point() == tmp_path / "step-00000003"


def test_resumed_run_continues_with_the_same_losses_as_an_uninterrupted_run(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir = tiny_model_dir(FAMILY)
    whole = run_sft(sft_config(tmp_path / "whole", model_dir))
    # The state a run killed after step 3 leaves behind: its run folder up to the step-3 checkpoint.
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "whole" / "data", resumed_dir / "data")
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-00000003", resumed_dir / "checkpoints" / "step-00000003")
    resumed = run_sft(sft_config(resumed_dir, model_dir, "--trainer.checkpoint.resume", "true"))

    assert (resumed.first_step, resumed.last_step) == (4, 6)
    expected = [row["loss"] for row in read_metrics(whole.metrics_path)][3:]
    got = [row["loss"] for row in read_metrics(resumed.metrics_path)]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)
    final_whole = AutoModelForImageTextToText.from_pretrained(whole.checkpoint).state_dict()
    final_resumed = AutoModelForImageTextToText.from_pretrained(resumed.checkpoint).state_dict()
    assert max(float((final_whole[k] - final_resumed[k]).abs().max()) for k in final_whole) < 1e-6
