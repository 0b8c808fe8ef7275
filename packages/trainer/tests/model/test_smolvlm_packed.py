"""SmolVLM2 packed: a packed row of split images trains exactly like its samples run one by one.

The tiny SmolVLMForConditionalGeneration (real transformers classes, random weights: a SigLIP-style tower on 32 px
tiles, pixel-shuffled by 2 to 4 tokens a tile, a Llama decoder), real images through the real SmolVLMProcessor
(tiles plus the global view), fp32 on CPU. The reference runs each sample alone and unpadded through the model's own
forward with the processor's own output (`pixel_values` `[1, tiles, 3, H, W]` and `pixel_attention_mask`), so it
shares nothing with our packing, where each image is `[tiles, 1, 3, H, W]` as the trainer's adapter keeps it; the
samples' images have different tile counts (13; 9 and 17; none).

Tolerances as tests/model/test_packed_equivalence.py: per-token target log-probs atol 1e-5; summed loss rtol 1e-6;
every parameter gradient atol 1e-5, rtol 1e-4.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText
from transformers.processing_utils import ProcessorMixin

from foveal.trainer.data.collate import PackedBatch, PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.model.attention import set_attention
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.model.varlen import VARLEN_ATTENTION
from foveal.trainer.training.chunked_ce import packed_token_nll
from foveal.trainer.training.loss import token_nll

FAMILY = "smolvlm"
LOGPROB_ATOL = 1e-5
LOSS_RTOL = 1e-6
GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-4


def _picture(size: tuple[int, int], color: str) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((size[0] // 5, size[1] // 5, 4 * size[0] // 5, 4 * size[1] // 5), fill=color)
    ImageDraw.Draw(image).line((0, size[1] - 1, size[0] - 1, 0), fill="gray", width=3)
    return image


# (images, question, answer): 4 x 3 tiles plus the global view; 4 x 2 + 1 and 4 x 4 + 1; text only.
CONVERSATIONS = [
    ([_picture((90, 60), "red")], "What color is the circle?", "The circle is red."),
    ([_picture((40, 130), "blue"), _picture((20, 20), "green")], "Describe both.", "A tall blue one, a small green."),
    ([], "What is 17 * 3?", "17 * 3 = 51."),
]


@dataclass(frozen=True)
class Reference:
    inputs: dict[str, torch.Tensor]
    """The processor's output for one conversation alone: input_ids and (with images) pixel_values."""
    weights: torch.Tensor


def _references(processor: ProcessorMixin) -> list[Reference]:
    generator = torch.Generator().manual_seed(0)
    references = []
    for images, question, answer in CONVERSATIONS:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
        reply = [{"type": "text", "text": answer}]  # the template reads content as parts only
        chat = [{"role": "user", "content": content}, {"role": "assistant", "content": reply}]
        text = processor.apply_chat_template(chat, tokenize=False)
        out = processor(text=[text], images=[images] if images else None, return_tensors="pt")
        inputs = {k: v for k, v in out.items() if k != "attention_mask"}
        references.append(Reference(inputs, torch.rand(inputs["input_ids"].shape[1], generator=generator)))
    return references


def _pack(references: list[Reference], model: torch.nn.Module) -> PackedBatch:
    samples = [
        PackSample(
            sample_id=f"sample-{i}",
            token_ids=r.inputs["input_ids"][0].tolist(),
            loss_weights=r.weights.tolist(),
            pixel_kwargs=_per_tile(r.inputs),
        )
        for i, r in enumerate(references)
    ]
    return collate_packed(samples, position_scheme(model))


def _per_tile(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The processor's `[1, tiles, ...]` image tensors as the trainer's adapter keeps them: `[tiles, 1, ...]`."""
    names = ("pixel_values", "pixel_attention_mask")
    return {name: inputs[name].transpose(0, 1) for name in names if name in inputs}


@pytest.fixture(scope="module")
def references(tiny_processor: Callable[[str], ProcessorMixin]) -> list[Reference]:
    return _references(tiny_processor(FAMILY))


@pytest.fixture(scope="module")
def load(tiny_model_dir: Callable[[str], Path]) -> Callable[[str], torch.nn.Module]:
    def build(attn: str) -> torch.nn.Module:
        folder = tiny_model_dir(FAMILY)
        return AutoModelForImageTextToText.from_pretrained(folder, attn_implementation=attn, dtype=torch.float32)

    return build


def _alone(model: torch.nn.Module, reference: Reference) -> torch.Tensor:
    """Log-prob of each next token of one sample run alone through the model's own forward: `[L - 1]`."""
    logits = model(**reference.inputs, use_cache=False).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, reference.inputs["input_ids"][0, 1:, None])[:, 0]


def _gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _per_sample(batch: PackedBatch, row: torch.Tensor) -> list[torch.Tensor]:
    return [row[0, start : end - 1] for start, end in itertools.pairwise(batch.cu_seqlens.tolist())]


def test_the_references_have_images_of_different_tile_counts(
    references: list[Reference], load: Callable[[str], torch.nn.Module]
) -> None:
    config = load("sdpa").config
    tiles = [int(r.inputs["pixel_values"].shape[1]) if "pixel_values" in r.inputs else 0 for r in references]
    assert tiles == [13, 9 + 17, 0]
    placeholders = [int((r.inputs["input_ids"] == config.image_token_id).sum()) for r in references]
    assert placeholders == [count * 4 for count in tiles]


@pytest.mark.parametrize("attn", ["sdpa", "eager", "varlen"])
def test_packed_smolvlm_row_matches_each_sample_through_its_own_forward(
    attn: str, references: list[Reference], load: Callable[[str], torch.nn.Module]
) -> None:
    model = load("sdpa")
    if attn == "varlen":  # the text model and the vision tower both (each tile its own document)
        set_attention(model, "varlen")
        assert model.config.get_text_config()._attn_implementation == VARLEN_ATTENTION
    elif attn == "eager":
        model.set_attn_implementation("eager")
    batch = _pack(references, model)
    reference_model = load("sdpa")

    single = [_alone(reference_model, reference) for reference in references]
    single_loss = sum(-(lp * r.weights[1:]).sum() for lp, r in zip(single, references, strict=True))
    single_grads = _gradients(reference_model, single_loss)

    packed = -token_nll(packed_logits(model, batch), batch.labels)
    packed_loss = -(packed * batch.loss_weights).sum()
    packed_grads = _gradients(model, packed_loss)

    for got, expected in zip(_per_sample(batch, packed), single, strict=True):
        torch.testing.assert_close(got, expected.detach(), atol=LOGPROB_ATOL, rtol=0)
    torch.testing.assert_close(packed_loss, single_loss, rtol=LOSS_RTOL, atol=0)
    assert packed_grads.keys() == single_grads.keys()
    assert any(name.startswith("model.vision_model.") for name in packed_grads)
    assert any(name.startswith("model.connector.") for name in packed_grads)
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, single_grads[name], atol=GRAD_ATOL, rtol=GRAD_RTOL, msg=name)


@torch.no_grad()
def test_without_the_restarting_positions_later_samples_miss_the_reference(
    references: list[Reference], load: Callable[[str], torch.nn.Module]
) -> None:
    """The control: the same packed row numbered straight through (one causal sequence) misses the later samples."""
    model = load("sdpa")
    batch = _pack(references, model)
    through = torch.arange(batch.num_tokens).view(1, -1)
    logits = model(input_ids=batch.input_ids, position_ids=through, use_cache=False, **batch.pixel_kwargs).logits
    crossed = _per_sample(batch, -token_nll(logits, batch.labels))
    for index, (got, reference) in enumerate(zip(crossed, references, strict=True)):
        gap = float((got - _alone(model, reference)).abs().max())
        assert gap < LOGPROB_ATOL if index == 0 else gap > 1e-3, (index, gap)


def test_chunked_loss_through_the_head_equals_the_full_logits(
    references: list[Reference], load: Callable[[str], torch.nn.Module]
) -> None:
    model = load("sdpa")
    batch = _pack(references, model)
    full = packed_token_nll(model, batch, chunk_tokens=0)
    torch.testing.assert_close(packed_token_nll(model, batch, chunk_tokens=16), full, atol=1e-5, rtol=0)
