"""AdamW construction, the warmup + decay schedule's shape, its exact resume, and gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch

from foveal.configs.trainer import OptimConfig, ScheduleConfig
from foveal.renderers.errors import ContractError
from foveal.trainer.training.optim import ScheduleError, build_optimizer, build_scheduler, clip_gradients, lr_multiplier


def lrs(config: ScheduleConfig, total: int, peak: float = 1.0) -> list[float]:
    """The lr each of `total` optimizer steps trains with."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = build_scheduler(optimizer, config, total)
    out = []
    for _ in range(total):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_rises_linearly_to_the_peak_then_cosine_falls_to_the_floor() -> None:
    values = lrs(ScheduleConfig(kind="cosine", warmup_steps=4, min_lr_ratio=0.1), total=24)
    assert values[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    decay = values[4:]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    middle = 4 + 10  # halfway through the 20 decay steps: cosine is at the midpoint of [floor, peak]
    assert values[middle] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(ScheduleConfig(kind="cosine", warmup_steps=4, min_lr_ratio=0.1), 24)(24) == pytest.approx(0.1)


def test_linear_decay_is_a_straight_line_to_the_floor() -> None:
    multiplier = lr_multiplier(ScheduleConfig(kind="linear", warmup_steps=0, min_lr_ratio=0.0), 10)
    assert [multiplier(s) for s in range(11)] == pytest.approx([1 - s / 10 for s in range(11)])


def test_constant_stays_at_the_peak_after_warmup() -> None:
    values = lrs(ScheduleConfig(kind="constant", warmup_steps=2, min_lr_ratio=0.1), total=8, peak=3e-4)
    assert values == pytest.approx([1e-4, 2e-4] + [3e-4] * 6)


def test_cosine_without_warmup_starts_at_the_peak() -> None:
    multiplier = lr_multiplier(ScheduleConfig(kind="cosine", warmup_steps=0, min_lr_ratio=0.0), 8)
    assert multiplier(0) == 1.0
    assert multiplier(4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


def test_scheduler_state_resumes_the_same_curve() -> None:
    config = ScheduleConfig(kind="cosine", warmup_steps=3, min_lr_ratio=0.2)
    full = lrs(config, total=12)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    first = build_scheduler(optimizer, config, 12)
    for _ in range(5):
        optimizer.step()
        first.step()
    resumed = build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), config, 12)
    resumed.load_state_dict(first.state_dict())
    rest = []
    for _ in range(7):
        rest.append(resumed.get_last_lr()[0])
        resumed.optimizer.step()
        resumed.step()
    assert rest == pytest.approx(full[5:])


def test_impossible_schedules_name_the_field() -> None:
    with pytest.raises(ScheduleError, match="warmup_steps"):
        lr_multiplier(ScheduleConfig(warmup_steps=11), 10)
    with pytest.raises(ScheduleError, match="total_steps"):
        lr_multiplier(ScheduleConfig(), 0)


def test_adamw_takes_the_configured_hyperparameters_and_the_cpu_kernel() -> None:
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    optimizer = build_optimizer(model, OptimConfig(lr=3e-4, betas=(0.8, 0.95), weight_decay=0.1, eps=1e-6))
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"], group["eps"]) == (3e-4, (0.8, 0.95), 0.1, 1e-6)
    assert group["params"] == [model.weight]  # frozen parameters are left out
    assert not group["fused"] and group["foreach"]


class TinyVLM(torch.nn.Module):
    """A vision tower (`visual`, the Qwen-VL attribute name) beside a language model."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = torch.nn.Linear(2, 2)
        self.language_model = torch.nn.Linear(2, 2)


def test_vision_lr_scale_moves_the_vision_side_that_many_times_faster_through_the_schedule() -> None:
    model = TinyVLM()
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2, vision_lr_scale=10.0))
    scheduler = build_scheduler(optimizer, ScheduleConfig(kind="linear", warmup_steps=0, min_lr_ratio=0.0), 4)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-2, pytest.approx(1e-1)]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    sum(p.sum() for p in model.parameters()).backward()  # the same gradient (1) everywhere
    optimizer.step()
    scheduler.step()
    moved = {name: (before[name] - p.detach()).abs().max().item() for name, p in model.named_parameters()}
    assert moved["visual.weight"] == pytest.approx(0.1, rel=1e-4)  # Adam's first step: lr per weight
    assert moved["language_model.weight"] == pytest.approx(0.01, rel=1e-4)
    assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(7.5e-3), pytest.approx(7.5e-2)]


def test_vision_lr_scale_with_a_frozen_vision_side_leaves_one_group() -> None:
    model = TinyVLM()
    model.visual.requires_grad_(False)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2, vision_lr_scale=10.0))
    assert [group["params"] for group in optimizer.param_groups] == [list(model.language_model.parameters())]


def test_vision_lr_scale_on_a_text_model_names_the_setting() -> None:
    with pytest.raises(ContractError, match="trainer.optim.vision_lr_scale") as caught:
        build_optimizer(torch.nn.Linear(2, 2), OptimConfig(vision_lr_scale=2.0))
    assert caught.value.value == "Linear"


def test_clipping_returns_the_norm_before_and_scales_gradients_to_the_limit() -> None:
    weight = torch.nn.Parameter(torch.zeros(4))
    weight.grad = torch.tensor([3.0, 0.0, 4.0, 0.0])
    assert clip_gradients([weight], max_norm=1.0) == pytest.approx(5.0)
    assert float(weight.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    weight.grad = torch.tensor([0.3, 0.0, 0.4, 0.0])
    assert clip_gradients([weight], max_norm=1.0) == pytest.approx(0.5)
    torch.testing.assert_close(weight.grad, torch.tensor([0.3, 0.0, 0.4, 0.0]))
