"""Two CPU processes (torchrun, gloo, FSDP2) train exactly like one: same losses, gradient norms and weights.

The two-process run is the production path end to end: `torchrun --standalone --nproc-per-node 2 -m
foveal.configs sft ...`, each rank taking every other micro-batch of a step (4 per step here, so both
share evenly; the 3-micro-batch case with a weightless padding copy is covered by test_sft_data). The
step loss is normalized by the step's global loss tokens and gradients are summed over ranks, so the
only differences left are float summation order: the tolerance is 1e-5 (relative) on losses and
gradient norms and 1e-5 (absolute) on weights after 4 AdamW steps (measured: losses within 6e-8,
gradient norms within 1.2e-6 relative, weights within 3e-6). About 20 s on 2 cores, most of it the two
ranks importing torch and transformers, so it stays in the default run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from foveal.configs import SFTConfig, load_config
from foveal.trainer.training.distributed import DistributedContext, padded_share, rank_share, shares_per_rank
from foveal.trainer.training.metrics import read_metrics
from foveal.trainer.sft.train import run_sft

FAMILY = "qwen2_5_vl"


def overrides(run_dir: Path, model_dir: Path) -> list[str]:
    return ["--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir), "--sft.dataset", "shapes:64",
            "--sft.batch_size", "16", "--sft.max_steps", "4", "--trainer.seq_len", "256",
            "--trainer.micro_batch_tokens", "256", "--trainer.optim.lr", "2e-3", "--trainer.device", "cpu",
            "--trainer.checkpoint.every_steps", "4"]  # fmt: skip


def test_two_gloo_processes_match_one_process(
    tiny_model_dir: Callable[[str], Path], run_two_ranks: Callable[..., object], tmp_path: Path
) -> None:
    model_dir = tiny_model_dir(FAMILY)
    single = run_sft(load_config(SFTConfig, [], overrides(tmp_path / "one", model_dir)))
    run_two_ranks("sft", overrides(tmp_path / "two", model_dir))

    one, two = read_metrics(single.metrics_path), read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [row["micro_batches"] for row in one] == [4] * 4 and [row["micro_batches"] for row in two] == [4] * 4
    for a, b in zip(one, two, strict=True):
        assert (a["tokens"], a["loss_tokens"], a["samples"]) == (b["tokens"], b["loss_tokens"], b["samples"])
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
    weights_one = load_file(single.checkpoint / "model.safetensors")
    weights_two = load_file(tmp_path / "two" / "checkpoints" / "step-00000004" / "model.safetensors")
    assert weights_one.keys() == weights_two.keys()
    assert max(float((weights_one[k] - weights_two[k]).abs().max()) for k in weights_one) < 1e-5


def test_ranks_take_interleaved_shares_of_equal_count() -> None:
    contexts = [DistributedContext(rank=r, world_size=3, local_rank=r, device=torch.device("cpu")) for r in range(3)]
    assert [rank_share(list(range(7)), c) for c in contexts] == [[0, 3, 6], [1, 4], [2, 5]]
    assert shares_per_rank(7, 3) == 3 and shares_per_rank(6, 3) == 2 and shares_per_rank(1, 2) == 1
    assert [padded_share(list("abcdefg"), c) for c in contexts] == [
        (["a", "d", "g"], []),
        (["b", "e"], ["b"]),
        (["c", "f"], ["c"]),
    ]
    lone = DistributedContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    assert padded_share(["only"], lone) == ([], ["only"])  # a rank without work still runs one (weightless) pass


def test_a_world_of_one_needs_no_process_group() -> None:
    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    context.barrier()
    assert context.sum([1.5, 2]) == [1.5, 2.0] and context.max([3.0]) == [3.0]
