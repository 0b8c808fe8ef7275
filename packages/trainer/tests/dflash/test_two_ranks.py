"""Two CPU processes (torchrun, gloo, FSDP2-sharded draft) train a DFlash draft exactly like one process.

The same plan on any number of ranks: each rank answers its share of the generation batches and the responses
are swapped as int64 tensors; each micro-batch draws its anchors from its index in the whole step, not from the
rank; the draft starts from the same seed on every rank. Micro-batches of a step are dealt out as in SFT
(`rank_share`, weightless padding for the odd one), and every rank runs as many draft forwards per micro-batch
as the rank with the most anchor chunks (FSDP2 all-gathers per forward; uneven counts would hang the ranks).
So the two-process losses, gradient norms, held-out acceptance and final weights match the one-process run up
to float summation order (the tolerances of test_distributed). About 30 s on 2 cores.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file

from foveal.configs import DFlashConfig, load_config
from foveal.trainer.dflash.draft import WEIGHTS_FILE
from foveal.trainer.dflash.train import run_dflash
from foveal.trainer.training.metrics import read_metrics


def overrides(run_dir: Path, model_dir: Path) -> list[str]:
    return ["--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir), "--dflash.dataset", "mixed:24",
            "--dflash.train_examples", "12", "--dflash.eval_examples", "3", "--dflash.max_new_tokens", "8",
            "--dflash.generate_batch_size", "3", "--dflash.block_size", "4", "--dflash.anchors_per_sample", "6",
            "--dflash.anchor_chunk", "4", "--dflash.batch_size", "6", "--dflash.max_steps", "3",
            "--draft.num_layers", "2", "--trainer.seq_len", "128", "--trainer.micro_batch_tokens", "128",
            "--trainer.optim.lr", "3e-3", "--trainer.schedule.warmup_steps", "0", "--trainer.device", "cpu",
            "--trainer.checkpoint.every_steps", "3"]  # fmt: skip


def test_two_gloo_ranks_train_the_draft_like_one_process(
    tiny_model_dir: Callable[[str], Path],
    run_two_ranks: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    model_dir = tiny_model_dir("qwen2_5_vl")
    single = run_dflash(load_config(DFlashConfig, [], overrides(tmp_path / "one", model_dir)))
    done = run_two_ranks("dflash", overrides(tmp_path / "two", model_dir), timeout_s=300)

    untrained_one, *one = read_metrics(single.metrics_path)
    untrained_two, *two = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert untrained_one["step"] == untrained_two["step"] == 0
    assert untrained_two["eval_acceptance_length"] == pytest.approx(untrained_one["eval_acceptance_length"], abs=1e-9)
    assert [row["step"] for row in two] == [1, 2, 3]
    assert any(row["micro_batches"] % 2 for row in one)  # an odd count: one rank runs a weightless padding copy
    for a, b in zip(one, two, strict=True):
        counts = ("tokens", "samples", "images", "blocks")
        assert [a[key] for key in counts] == [b[key] for key in counts]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["accuracy"] == a["accuracy"]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
    assert two[-1]["eval_acceptance_length"] == pytest.approx(one[-1]["eval_acceptance_length"], abs=1e-9)
    assert "dflash: trained draft: acceptance length" in done.stdout

    weights_one = load_file(single.checkpoint / WEIGHTS_FILE)
    weights_two = load_file(tmp_path / "two" / "checkpoints" / "step-00000003" / WEIGHTS_FILE)
    assert weights_one.keys() == weights_two.keys()
    assert max(float((weights_one[k] - weights_two[k]).abs().max()) for k in weights_one) < 1e-5
