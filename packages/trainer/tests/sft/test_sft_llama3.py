"""`foveal sft` on the tiny Llama 3 (text only, untied embeddings, llama3 rope scaling): text conversations rendered by
the llama3 family, loss on the assistant turns only, a checkpoint that reloads and renders the same prompts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from transformers import AutoModelForCausalLM

from foveal.configs.cli import main
from foveal.renderers.factory import load_renderer
from foveal.trainer.training.metrics import read_metrics

FAMILY = "llama3"
COLORS = ["red", "blue", "green", "yellow"]


def text_dataset(path: Path) -> Path:
    rows = [{"messages": [{"role": "system", "content": "Answer with one word."},
                          {"role": "user", "content": f"Name color {i % 4}."}, {"role": "assistant", "content": c}]}
            for i, c in enumerate(COLORS * 4)]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_foveal_sft_trains_the_tiny_llama3_on_text_and_saves_a_loadable_checkpoint(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir, run_dir = tiny_model_dir(FAMILY), tmp_path / "run"
    argv = ["sft", "--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir),
            "--sft.dataset", str(text_dataset(tmp_path / "text.jsonl")), "--sft.batch_size", "4",
            "--sft.epochs", "2", "--sft.max_steps", "8", "--trainer.seq_len", "256",
            "--trainer.micro_batch_tokens", "256", "--trainer.optim.lr", "3e-3", "--trainer.device", "cpu"]  # fmt: skip
    assert main(argv) == 0

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, 9))
    assert all(row["samples"] == 4 and row["images"] == 0 and row["placeholder_zero_loss"] == 0 for row in rows)
    # Loss on the answer and its <|eot_id|> only: a few tokens of each ~70-token conversation.
    assert all(0 < row["loss_tokens"] <= 4 * 4 < row["tokens"] for row in rows)
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0, [row["loss"] for row in rows]

    checkpoint = run_dir / "checkpoints" / "step-00000008"
    trained = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert type(trained).__name__ == "LlamaForCausalLM"
    assert trained.config.rope_parameters["rope_type"] == "llama3"
    initial = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    changed = {name for name, value in trained.state_dict().items() if not value.equal(initial[name])}
    assert "lm_head.weight" in changed and "model.embed_tokens.weight" in changed  # untied, both trained
    conversation = [{"role": "user", "content": "Name color 1."}]
    reloaded, original = load_renderer(checkpoint), load_renderer(model_dir)
    assert reloaded.family == FAMILY
    assert (
        reloaded.render(conversation, add_generation_prompt=True).token_ids
        == original.render(conversation, add_generation_prompt=True).token_ids
    )
