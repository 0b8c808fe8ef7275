"""`run_sft` end to end on the tiny VLM, the `foveal sft` command, and the shipped demo config."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from foveal.configs import SFTConfig, load_config
from foveal.configs.cli import main
from foveal.renderers.errors import ContractError
from foveal.trainer.training.metrics import read_metrics
from foveal.trainer.sft.train import UnsupportedSetting, run_sft
from foveal.trainer.training.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[4]
FAMILY = "qwen2_5_vl"


def sft_config(run_dir: Path, model_dir: Path, *overrides: str) -> list[str]:
    return ["--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir), "--sft.dataset", "shapes:64",
            "--sft.batch_size", "8", "--trainer.seq_len", "256", "--trainer.micro_batch_tokens", "256",
            "--trainer.optim.lr", "3e-3", "--trainer.device", "cpu", *overrides]  # fmt: skip


def test_a_few_steps_on_the_tiny_vlm_lower_the_loss_and_leave_metrics_plot_and_checkpoint(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir = tiny_model_dir(FAMILY)
    overrides = sft_config(tmp_path / "run", model_dir, "--sft.max_steps", "8", "--logging.plots", "true")
    result = run_sft(load_config(SFTConfig, [], overrides))

    rows = read_metrics(result.metrics_path)
    assert [row["step"] for row in rows] == list(range(1, 9))
    assert result.initial_loss == rows[0]["loss"] and result.final_loss == rows[-1]["loss"]
    assert result.final_loss < result.initial_loss - 1.0, [row["loss"] for row in rows]
    assert all(row["samples"] == 8 and row["images"] == 8 and row["micro_batches"] == 2 for row in rows)
    assert all(0 < row["loss_tokens"] < row["tokens"] and row["placeholder_zero_loss"] == 0 for row in rows)
    with Image.open(result.run_dir / "loss.png") as plot:
        assert plot.format == "PNG"
    assert result.checkpoint == tmp_path / "run" / "checkpoints" / "step-00000008"
    AutoProcessor.from_pretrained(result.checkpoint)
    trained = AutoModelForImageTextToText.from_pretrained(result.checkpoint).state_dict()
    initial = AutoModelForImageTextToText.from_pretrained(model_dir).state_dict()
    assert any(not trained[name].equal(initial[name]) for name in initial)


def test_foveal_sft_command_trains_from_a_config_file(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        f'[model]\nname_or_path = "{tiny_model_dir(FAMILY)}"\n[sft]\nmax_steps = 2\nbatch_size = 4\n'
    )
    run_dir = tmp_path / "cli-run"
    overrides = ["--logging.run_dir", str(run_dir), "--sft.dataset", "shapes:16", "--trainer.seq_len", "256",
                 "--trainer.micro_batch_tokens", "512", "--trainer.device", "cpu"]  # fmt: skip
    assert main(["sft", "--config", str(config_file), *overrides]) == 0
    out, err = capsys.readouterr()
    assert "sft: steps 1-2" in out and str(run_dir / "checkpoints" / "step-00000002") in out
    # Our progress display owns stderr: transformers' loading and checkpoint-writing bars stay off.
    assert "Loading weights" not in err and "Writing model shards" not in err, err[-2000:]
    assert len(read_metrics(run_dir / "metrics.jsonl")) == 2


def test_the_demo_config_loads_and_keeps_the_demo_on_the_tiny_model() -> None:
    config = load_config(SFTConfig, [ROOT / "examples" / "sft_tiny_shapes.toml"], [])
    assert config.model.name_or_path == "tiny:qwen2_5_vl" and config.sft.dataset == "tiny:demo"
    assert config.logging.plots and config.trainer.checkpoint.every_steps < config.sft.max_steps


def test_a_text_only_model_trains_on_text_conversations(tiny_model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": f"Name color {i}."}, {"role": "assistant", "content": c}]}
            for i, c in enumerate(["red", "blue", "green", "yellow"] * 4)]  # fmt: skip
    dataset = tmp_path / "text.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    overrides = sft_config(tmp_path / "run", tiny_model_dir("qwen3"), "--sft.max_steps", "4", "--sft.batch_size", "4")
    result = run_sft(load_config(SFTConfig, [], [*overrides, "--sft.dataset", str(dataset)]))
    rows_logged = read_metrics(result.metrics_path)
    assert [row["images"] for row in rows_logged] == [0, 0, 0, 0]
    assert result.final_loss < result.initial_loss


def test_evaluation_during_sft_is_refused_rather_than_ignored(tmp_path: Path) -> None:
    config = load_config(SFTConfig, [], ["--sft.eval_every", "5", "--logging.run_dir", str(tmp_path)])
    with pytest.raises(UnsupportedSetting, match="sft.eval_every"):
        run_sft(config)


def test_freeze_vision_trains_the_language_model_only(tiny_model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    model_dir = tiny_model_dir(FAMILY)
    overrides = sft_config(tmp_path / "run", model_dir, "--sft.max_steps", "3", "--trainer.freeze_vision", "true")
    result = run_sft(load_config(SFTConfig, [], overrides))
    trained = AutoModelForImageTextToText.from_pretrained(result.checkpoint).state_dict()
    initial = AutoModelForImageTextToText.from_pretrained(model_dir).state_dict()
    vision = [name for name in initial if name.startswith("model.visual.")]
    language = [name for name in initial if name.startswith("model.language_model.")]
    assert vision and language
    assert all(trained[name].equal(initial[name]) for name in vision)
    assert sum(not trained[name].equal(initial[name]) for name in language) > len(language) // 2


def test_freeze_vision_on_a_text_only_model_names_the_setting(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    overrides = sft_config(tmp_path / "run", tiny_model_dir("qwen3"), "--trainer.freeze_vision", "true")
    refused = r"trainer.freeze_vision: a model with a vision tower \(got 'Qwen3ForCausalLM'\)"
    with pytest.raises(ContractError, match=refused):
        run_sft(load_config(SFTConfig, [], [*overrides, "--sft.dataset", str(tmp_path / "unused.jsonl")]))



def test_rerunning_into_a_finished_run_folder_is_one_line_naming_the_setting(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = sft_config(tmp_path / "run", tiny_model_dir(FAMILY), "--sft.max_steps", "1")
    assert main(["sft", *overrides]) == 0
    capsys.readouterr()
    assert main(["sft", *overrides]) == 1
    err = capsys.readouterr().err
    assert err.startswith("foveal sft: error: trainer.checkpoint.resume: true to continue the run")
    assert err.count("\n") == 1
    assert "Traceback" not in err
    with pytest.raises(CheckpointError, match="trainer.checkpoint.resume"):  # --debug: the traceback, for bug reports
        main(["--debug", "sft", *overrides])
