"""`run_dflash` on the tiny VLM target: the loss falls and the trained draft is accepted more than an untrained one.

The tiny target has random weights, so its answers are not the dataset's: the run regenerates every response
with the target's greedy decoding (`dflash.responses = "target"`, DFlash's self-distillation), which is
exactly what greedy verification accepts, and measures acceptance on held-out prompts (the eval splits).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from foveal.configs import DFlashConfig, load_config
from foveal.configs.cli import main
from foveal.configs.errors import ConfigError
from foveal.trainer.dflash.draft import DFlashDraft
from foveal.trainer.dflash.speculate import accepted_run
from foveal.trainer.dflash.train import PLOT_KEYS, run_dflash
from foveal.trainer.training.metrics import read_metrics
from foveal.trainer.training.plots import curves

ROOT = Path(__file__).resolve().parents[4]
EVAL_KEYS = ("eval_acceptance_length", "eval_speedup")


def overrides(run_dir: Path, model_dir: Path, *more: str) -> list[str]:
    return ["--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir), "--dflash.dataset", "mixed:64",
            "--dflash.train_examples", "32", "--dflash.eval_examples", "8", "--dflash.max_new_tokens", "16",
            "--dflash.block_size", "8", "--dflash.loss_decay_gamma", "4", "--dflash.anchors_per_sample", "16",
            "--dflash.batch_size", "16", "--dflash.epochs", "40", "--draft.num_layers", "2",
            "--trainer.seq_len", "256", "--trainer.micro_batch_tokens", "512", "--trainer.optim.lr", "3e-3",
            "--trainer.schedule.warmup_steps", "5", "--trainer.device", "cpu", *more]  # fmt: skip


def test_accepted_run_counts_the_leading_matches_only() -> None:
    assert accepted_run(torch.tensor([5, 6, 7]), torch.tensor([5, 6, 9])) == 2
    assert accepted_run(torch.tensor([1, 6]), torch.tensor([5, 6])) == 0
    assert accepted_run(torch.tensor([5, 6, 7]), torch.tensor([5])) == 1  # the reference ends early


def test_training_lowers_the_loss_and_beats_an_untrained_draft_on_held_out_prompts(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    args = overrides(tmp_path / "run", tiny_model_dir("qwen2_5_vl"), "--dflash.max_steps", "40",
                     "--dflash.eval_every", "20", "--logging.plots", "true")  # fmt: skip
    result = run_dflash(load_config(DFlashConfig, [], args))

    untrained, *rows = read_metrics(result.metrics_path)
    assert [row["step"] for row in rows] == list(range(1, 41))
    assert all(row["samples"] == 16 and 0 < row["images"] < 16 and row["blocks"] > 16 for row in rows)
    early, late = sum(row["loss"] for row in rows[:5]) / 5, sum(row["loss"] for row in rows[-5:]) / 5
    assert late < early - 0.2, [round(row["loss"], 3) for row in rows]
    assert rows[-1]["accuracy"] > rows[0]["accuracy"] + 0.05
    assert [row["step"] for row in rows if "eval_acceptance_length" in row] == [20, 40]

    initial, final = result.initial_eval, result.final_eval
    assert initial is not None and final is not None and initial.samples == final.samples == 8
    assert untrained["step"] == 0 and untrained["eval_acceptance_length"] == initial.acceptance_length
    assert untrained["eval_speedup"] == initial.speedup
    assert initial.acceptance_length == pytest.approx(1.0, abs=0.05)
    assert final.acceptance_length > initial.acceptance_length + 0.1
    assert final.speedup > initial.speedup and final.target_forwards < initial.target_forwards
    assert final.acceptance_length == rows[-1]["eval_acceptance_length"]

    assert result.checkpoint == tmp_path / "run" / "checkpoints" / "step-00000040"
    draft = DFlashDraft.from_pretrained(result.checkpoint)
    assert draft.spec.target_layer_ids == (0, 1) and draft.spec.block_size == 8
    assert (result.run_dir / "dflash.png").is_file()


def test_foveal_dflash_command_runs_from_the_example_config(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = overrides(tmp_path / "cli", tiny_model_dir("qwen2_5_vl"), "--dflash.max_steps", "2",
                     "--dflash.train_examples", "8", "--dflash.eval_examples", "2", "--dflash.batch_size", "4",
                     "--trainer.schedule.warmup_steps", "0")  # fmt: skip
    assert main(["dflash", "--config", str(ROOT / "examples" / "dflash_tiny.toml"), *args]) == 0
    out = capsys.readouterr().out
    assert "dflash: steps 1-2" in out and "untrained draft: acceptance length" in out
    assert str(tmp_path / "cli" / "checkpoints" / "step-00000002") in out

    # The untrained acceptance it printed is step 0 of metrics.jsonl, where the plot's eval curve starts.
    rows = read_metrics(tmp_path / "cli" / "metrics.jsonl")
    assert [row["step"] for row in rows] == [0, 1, 2] and set(rows[0]) == {"step", *EVAL_KEYS}
    assert f"untrained draft: acceptance length {rows[0]['eval_acceptance_length']:.2f}" in out
    acceptance = curves(rows, PLOT_KEYS)["eval_acceptance_length"]
    assert acceptance == [(0, rows[0]["eval_acceptance_length"]), (2, rows[2]["eval_acceptance_length"])]
    assert (tmp_path / "cli" / "dflash.png").is_file()


def test_the_example_configs_load_and_bad_layer_ids_are_refused() -> None:
    tiny = load_config(DFlashConfig, [ROOT / "examples" / "dflash_tiny.toml"], [])
    assert tiny.model.name_or_path == "tiny:qwen2_5_vl" and tiny.dflash.dataset == "tiny:mixed"
    gpu = load_config(DFlashConfig, [ROOT / "examples" / "dflash_qwen2_5_vl_3b.toml"], [])
    assert gpu.model.name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct" and gpu.dflash.block_size == 16
    with pytest.raises(ConfigError, match="dflash.target_layer_ids"):
        load_config(DFlashConfig, [], ["--dflash.target_layer_ids", "[1, 1]"])
