"""Metrics JSONL lines, their reduction over ranks, the loss plot, and the W&B sink's failure when missing."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from foveal.configs.logging import LoggingConfig
from foveal.trainer.dflash.train import EvalRow
from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.training.metrics import MetricsLogger, MetricsSinkError, RankStep, StepMetrics, read_metrics, reduce_step
from foveal.trainer.training.plots import moving_average, plot_training

SINGLE = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def metrics(step: int, loss: float) -> StepMetrics:
    rank_step = RankStep(loss=loss, tokens=900, samples=16, images=16, zeroed_samples=1, micro_batches=2,
                         seconds=0.5, data_wait_seconds=0.1)  # fmt: skip
    return reduce_step(SINGLE, rank_step, step=step, epoch=0, lr=1e-3, grad_norm=2.0, loss_tokens=45,
                       micro_batch_tokens=512)  # fmt: skip


def test_step_metrics_derive_rates_and_shares_from_the_counts() -> None:
    m = metrics(3, 1.5)
    assert (m.tokens, m.loss_tokens, m.samples, m.images, m.placeholder_zero_loss) == (900, 45, 16, 16, 1)
    assert m.packing_efficiency == pytest.approx(900 / 1024)
    assert m.tokens_per_second == pytest.approx(1800)
    assert m.data_wait_share == pytest.approx(0.2)


def test_every_logged_step_is_one_json_line_with_every_field(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, LoggingConfig(log_every=2), enabled=True, run_config={}, start_step=0)
    for step in range(1, 6):
        logger.log(metrics(step, 10.0 / step), last_step=5)
    rows = read_metrics(logger.path)
    assert [row["step"] for row in rows] == [2, 4, 5]  # every 2nd step, and always the last
    assert set(rows[0]) == {field.name for field in dataclasses.fields(StepMetrics)}
    assert rows[0]["loss"] == pytest.approx(5.0)
    assert all(json.loads(line) for line in logger.path.read_text().splitlines())


def test_a_resumed_run_drops_the_lines_after_its_checkpoint(tmp_path: Path) -> None:
    first = MetricsLogger(tmp_path, LoggingConfig(), enabled=True, run_config={}, start_step=0)
    for step in range(1, 8):
        first.log(metrics(step, 1.0), last_step=10)
    resumed = MetricsLogger(tmp_path, LoggingConfig(), enabled=True, run_config={}, start_step=4)
    resumed.log(metrics(5, 0.5), last_step=10)
    assert [(row["step"], row["loss"]) for row in read_metrics(resumed.path)] == [
        (1, 1.0),
        (2, 1.0),
        (3, 1.0),
        (4, 1.0),
        (5, 0.5),
    ]


def test_a_step_0_evaluation_survives_a_resume_but_not_a_fresh_start(tmp_path: Path) -> None:
    first = MetricsLogger(tmp_path, LoggingConfig(), enabled=True, run_config={}, start_step=0)
    first.log(EvalRow(step=0, eval_acceptance_length=1.0, eval_speedup=1.0), last_step=4)
    for step in range(1, 4):
        first.log(metrics(step, 1.0), last_step=4)
    MetricsLogger(tmp_path, LoggingConfig(), enabled=True, run_config={}, start_step=2)
    assert [row["step"] for row in read_metrics(first.path)] == [0, 1, 2]
    assert read_metrics(first.path)[0] == {"step": 0, "eval_acceptance_length": 1.0, "eval_speedup": 1.0}
    MetricsLogger(tmp_path, LoggingConfig(), enabled=True, run_config={}, start_step=0)
    assert read_metrics(first.path) == []  # a fresh run measures (and logs) its own step 0


def test_ranks_other_than_zero_write_nothing(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, LoggingConfig(), enabled=False, run_config={}, start_step=0)
    logger.log(metrics(1, 1.0), last_step=1)
    assert not logger.path.exists()


def test_loss_plot_is_a_png_in_the_run_folder(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, LoggingConfig(), enabled=True, run_config={}, start_step=0)
    for step in range(1, 30):
        logger.log(metrics(step, 5.0 / step), last_step=29)
    out = plot_training(logger.path, tmp_path / "loss.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (800, 500)
        assert len(image.convert("RGB").getcolors(maxcolors=100_000)) > 10  # curves were drawn, not a blank page
    assert plot_training(tmp_path / "missing.jsonl", tmp_path / "none.png") is None


def test_moving_average_is_a_trailing_mean() -> None:
    assert moving_average([4.0, 2.0, 6.0, 0.0], window=2) == [4.0, 3.0, 4.0, 3.0]


def test_configured_wandb_that_is_not_installed_fails_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(MetricsSinkError, match="logging.wandb_project"):
        MetricsLogger(tmp_path, LoggingConfig(wandb_project="foveal"), enabled=True, run_config={}, start_step=0)
