"""`foveal sft` on the tiny Qwen3-VL Thinking: the Qwen3-VL model and image adapter under the thinking template, with
reasoning in the assistant turns that the renderer writes as `<think>` blocks and puts under the loss."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from foveal.configs.cli import main
from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.factory import load_renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.data.sources import open_dataset
from foveal.trainer.training.metrics import read_metrics
from foveal.verifiers.datasets.chat_jsonl import write_shapes_dataset

FAMILY = "qwen3_vl_thinking"
EXAMPLES = 8


def reasoning_dataset(folder: Path) -> Path:
    """The shapes examples with a reasoning trace on each answer (`reasoning_content`, as OpenAI clients send it)."""
    shapes = write_shapes_dataset(folder, EXAMPLES, seed=0, split="train")
    rows = [json.loads(line) for line in shapes.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        answer = row["messages"][-1]
        answer["reasoning_content"] = f"I look at the image and count. So the answer is {answer['content']}."
    path = folder / "reasoning.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_foveal_sft_trains_the_tiny_qwen3_vl_thinking_on_reasoning_with_images(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir, run_dir = tiny_model_dir(FAMILY), tmp_path / "run"
    dataset = reasoning_dataset(tmp_path / "data")
    multimodal = MultimodalConfig(allowed_image_roots=[str(dataset.parent)])
    renderer = load_renderer(model_dir, store=ImageStore(tmp_path / "store", multimodal, durable=False))
    assert renderer.family == FAMILY and renderer.adapter.layout_family == "qwen3_vl"

    # What the trainer will see: each answer's reasoning rendered as <think> ... </think> and all of it trained.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    think_open, think_close = tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    conversations, _ = open_dataset(str(dataset), run_dir, 0)
    loss_tokens = 0
    for index in range(len(conversations)):
        rendered = renderer.render(conversations[index].messages)
        trained = [token for token, weight in zip(rendered.token_ids, rendered.loss_mask, strict=True) if weight]
        assert trained[0] == think_open and think_close in trained, tokenizer.decode(trained)
        reasoning = conversations[index].messages[-1].reasoning_content
        assert reasoning in tokenizer.decode(trained) and tokenizer.decode(trained).endswith("<|im_end|>")
        loss_tokens += sum(rendered.loss_mask)

    argv = ["sft", "--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir),
            "--sft.dataset", str(dataset), "--sft.batch_size", str(EXAMPLES), "--sft.max_steps", "8",
            "--sft.epochs", "8", "--trainer.seq_len", "256", "--trainer.micro_batch_tokens", "1024",
            "--trainer.optim.lr", "3e-3", "--trainer.device", "cpu"]  # fmt: skip
    assert main(argv) == 0

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, 9))
    assert all(row["samples"] == EXAMPLES and row["images"] == EXAMPLES for row in rows)
    # Every step is the whole dataset, so its loss tokens are exactly the renderer's loss masks.
    assert all(row["loss_tokens"] == loss_tokens for row in rows), (loss_tokens, rows[0]["loss_tokens"])
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0, [row["loss"] for row in rows]

    checkpoint = run_dir / "checkpoints" / "step-00000008"
    assert type(AutoProcessor.from_pretrained(checkpoint)).__name__ == "Qwen3VLProcessor"
    assert load_renderer(checkpoint).family == FAMILY  # the thinking template is kept
    trained = AutoModelForImageTextToText.from_pretrained(checkpoint).state_dict()
    initial = AutoModelForImageTextToText.from_pretrained(model_dir).state_dict()
    changed = {name for name in initial if not trained[name].equal(initial[name])}
    for prefix in ("model.visual.blocks.", "model.visual.merger.", "model.language_model."):
        assert any(name.startswith(prefix) for name in changed), prefix
