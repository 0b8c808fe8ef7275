"""`foveal sft` on the tiny InternVL 3.5: images rendered, stored, materialized as tiles plus a thumbnail, packed with
1-D positions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from transformers import AutoModelForImageTextToText, AutoProcessor

from foveal.configs.cli import main
from foveal.trainer.training.metrics import read_metrics

FAMILY = "internvl"


def test_foveal_sft_trains_the_tiny_internvl_on_images_and_saves_a_loadable_checkpoint(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir, run_dir = tiny_model_dir(FAMILY), tmp_path / "run"
    argv = ["sft", "--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir),
            "--sft.dataset", "shapes:64", "--sft.batch_size", "8", "--sft.max_steps", "8",
            "--trainer.seq_len", "128", "--trainer.micro_batch_tokens", "512", "--trainer.optim.lr", "3e-3",
            "--trainer.device", "cpu"]  # fmt: skip
    assert main(argv) == 0

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, 9))
    assert all(row["samples"] == 8 and row["images"] == 8 and row["placeholder_zero_loss"] == 0 for row in rows)
    assert all(row["micro_batches"] == 1 and 0 < row["loss_tokens"] < row["tokens"] <= 512 for row in rows)
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0, [row["loss"] for row in rows]

    checkpoint = run_dir / "checkpoints" / "step-00000008"
    assert type(AutoProcessor.from_pretrained(checkpoint)).__name__ == "InternVLProcessor"
    trained = AutoModelForImageTextToText.from_pretrained(checkpoint).state_dict()
    initial = AutoModelForImageTextToText.from_pretrained(model_dir).state_dict()
    changed = {name for name in initial if not trained[name].equal(initial[name])}
    # The images reach the loss: the vision tower and the projector are trained along with the text model.
    for prefix in ("model.vision_tower.", "model.multi_modal_projector.", "model.language_model."):
        assert any(name.startswith(prefix) for name in changed), prefix
