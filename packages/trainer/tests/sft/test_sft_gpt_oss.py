"""`foveal sft` on the tiny gpt-oss (experts, attention sinks, sliding-window layers, YaRN rope, untied embeddings):
conversations rendered by the gpt_oss family (harmony format), loss on what the model writes after
`<|start|>assistant` (the last answer's analysis, final message and `<|return|>`), a checkpoint that reloads and renders
the same prompts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from transformers import AutoModelForCausalLM

from foveal.configs.cli import main
from foveal.renderers.factory import load_renderer
from foveal.trainer.training.metrics import read_metrics

FAMILY = "gpt_oss"
COLORS = ["red", "blue", "green", "yellow"]


def text_dataset(path: Path) -> Path:
    rows = [{"messages": [{"role": "system", "content": "Answer with one word."},
                          {"role": "user", "content": f"Name color {i % 4}."},
                          {"role": "assistant", "content": c, "reasoning_content": "Easy."}]}
            for i, c in enumerate(COLORS * 4)]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_foveal_sft_trains_the_tiny_gpt_oss_on_harmony_conversations_and_saves_a_loadable_checkpoint(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir, run_dir, dataset = tiny_model_dir(FAMILY), tmp_path / "run", text_dataset(tmp_path / "text.jsonl")
    argv = ["sft", "--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir),
            "--sft.dataset", str(dataset), "--sft.batch_size", "4",
            "--sft.epochs", "2", "--sft.max_steps", "8", "--trainer.seq_len", "256",
            "--trainer.micro_batch_tokens", "256", "--trainer.optim.lr", "3e-3", "--trainer.device", "cpu"]  # fmt: skip
    assert main(argv) == 0

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, 9))
    assert all(row["samples"] == 4 and row["images"] == 0 for row in rows)
    # Loss on `<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>{color}<|return|>`
    # of each conversation only, as the renderer masks it; never the system, developer or user messages.
    renderer = load_renderer(model_dir)
    trained = [
        sum(renderer.render(json.loads(line)["messages"]).loss_mask) for line in dataset.read_text().splitlines()
    ]
    assert 15 <= min(trained) and max(trained) <= 25
    assert all(4 * min(trained) <= row["loss_tokens"] <= 4 * max(trained) < row["tokens"] for row in rows)
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0, [row["loss"] for row in rows]

    checkpoint = run_dir / "checkpoints" / "step-00000008"
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert type(model).__name__ == "GptOssForCausalLM"
    initial = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    changed = {name for name, value in model.state_dict().items() if not value.equal(initial[name])}
    assert {"lm_head.weight", "model.embed_tokens.weight", "model.layers.0.self_attn.sinks"} <= changed
    assert any(".mlp.experts." in name for name in changed) and any(".mlp.router." in name for name in changed)
    conversation = [{"role": "user", "content": "Name color 1."}]
    reloaded, original = load_renderer(checkpoint), load_renderer(model_dir)
    assert reloaded.family == FAMILY
    assert (
        reloaded.render(conversation, add_generation_prompt=True).token_ids
        == original.render(conversation, add_generation_prompt=True).token_ids
    )
