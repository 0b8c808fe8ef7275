"""The key proof of packing: a packed micro-batch trains exactly like its samples run one by one.

Real tiny models (transformers classes, random weights), real images through the real processors, fp32 on CPU.
The reference runs each sample alone and unpadded through the model's own forward, with the model's own
position ids (from the processor's `mm_token_type_ids`), so it shares nothing with our packing code.

Tolerances (fp32; packed and single runs differ only in reduction order and the masked-attention kernel):
  per-token target log-probs: atol 1e-5;  summed loss: rtol 1e-6;  every parameter gradient: atol 1e-5, rtol 1e-4.
Without the boundaries (each of the ways transformers silently drops them) the first sample still matches, and
the later ones miss by far more than these tolerances.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer
from transformers.masking_utils import create_causal_mask
from transformers.processing_utils import ProcessorMixin

from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackedBatch, PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.training.loss import token_nll
from foveal.trainer.model.attention import check_boundaries, check_packed_attention
from foveal.trainer.model.forward import packed_logits

LOGPROB_ATOL = 1e-5
LOSS_RTOL = 1e-6
GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-4
CASES = [
    ("qwen2_vl", "sdpa"),
    ("qwen2_5_vl", "sdpa"),
    ("qwen2_5_vl", "eager"),
    ("qwen3_vl", "sdpa"),
    ("glm4v", "sdpa"),
    ("glm4v", "eager"),
    ("qwen3", "sdpa"),
    ("qwen3", "eager"),
]


def _picture(size: tuple[int, int], color: str, shape: str) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    box = (size[0] // 5, size[1] // 5, 4 * size[0] // 5, 4 * size[1] // 5)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=color, outline="black")
    draw.line((0, size[1] - 1, size[0] - 1, 0), fill="gray", width=3)
    return image


# (images, question, answer): two samples with images of different sizes and counts, then a text-only one.
# The text model gets the same questions and answers without the images.
CONVERSATIONS = [
    ([_picture((90, 60), "red", "circle")], "What color is the circle in the image?", "The circle is red."),
    (
        [_picture((64, 120), "blue", "square"), _picture((64, 64), "green", "circle")],
        "Compare the two pictures.",
        "The first is a tall blue square and the second a small green circle.",
    ),
    ([], "What is 17 * 3?", "17 * 3 = 51, so the answer is 51."),
]


@dataclass(frozen=True)
class Reference:
    """One sample as the model sees it alone: the processor's output and its per-token loss weights."""

    inputs: dict[str, torch.Tensor]
    weights: torch.Tensor


@dataclass(frozen=True)
class Case:
    model: torch.nn.Module
    references: list[Reference]
    batch: PackedBatch


def _references(folder: Path, processor: ProcessorMixin | None) -> list[Reference]:
    """The conversations through the family's real processor (or tokenizer), with random per-token weights."""
    generator = torch.Generator().manual_seed(0)
    references = []
    for images, question, answer in CONVERSATIONS:
        reply = {"role": "assistant", "content": answer}
        if processor is not None:
            content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
            text = processor.apply_chat_template([{"role": "user", "content": content}, reply], tokenize=False)
            out = processor(text=[text], images=images or None, return_tensors="pt", return_mm_token_type_ids=True)
            inputs = {k: v for k, v in out.items() if k != "attention_mask"}
        else:
            encoded = AutoTokenizer.from_pretrained(folder).apply_chat_template(
                [{"role": "user", "content": question}, reply]
            )
            inputs = {"input_ids": torch.tensor([encoded["input_ids"]])}
        # Random weights on every token, prompt and image placeholders included, so every position counts.
        references.append(Reference(inputs, torch.rand(inputs["input_ids"].shape[1], generator=generator)))
    return references


def _pack_sample(index: int, reference: Reference) -> PackSample:
    return PackSample(
        sample_id=f"sample-{index}",
        token_ids=reference.inputs["input_ids"][0].tolist(),
        loss_weights=reference.weights.tolist(),
        pixel_kwargs={k: v for k, v in reference.inputs.items() if k in ("pixel_values", "image_grid_thw")},
    )


@pytest.fixture(scope="module")
def case(
    tiny_model_dir: Callable[[str], Path], tiny_processor: Callable[[str], ProcessorMixin]
) -> Callable[[str, str], Case]:
    """(family, attention implementation) -> a fresh fp32 model, its samples run alone, and their packed row."""

    @functools.cache
    def references(family: str) -> list[Reference]:
        return _references(tiny_model_dir(family), None if family == "qwen3" else tiny_processor(family))

    def build(family: str, attn: str) -> Case:
        auto = AutoModelForCausalLM if family == "qwen3" else AutoModelForImageTextToText
        model = auto.from_pretrained(tiny_model_dir(family), attn_implementation=attn, dtype=torch.float32)
        samples = [_pack_sample(i, r) for i, r in enumerate(references(family))]
        return Case(model, references(family), collate_packed(samples, position_scheme(model)))

    return build


def _reference_logprobs(model: torch.nn.Module, reference: Reference) -> torch.Tensor:
    """Log-prob of each next token of one sample run alone: `[L - 1]`."""
    logits = model(**reference.inputs, use_cache=False).logits[0, :-1].float()
    targets = reference.inputs["input_ids"][0, 1:]
    return torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0]


def _gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _per_sample(batch: PackedBatch, row: torch.Tensor) -> Iterator[torch.Tensor]:
    """The positions of `row` that have a target, sample by sample (each sample's last token has none)."""
    for start, end in itertools.pairwise(batch.cu_seqlens.tolist()):
        yield row[0, start : end - 1]


@pytest.mark.parametrize(("family", "attn"), CASES)
def test_packed_micro_batch_matches_samples_run_one_by_one(
    family: str, attn: str, case: Callable[[str, str], Case]
) -> None:
    setup = case(family, attn)
    model, batch = setup.model, setup.batch
    if family != "qwen3":
        grids = batch.pixel_kwargs["image_grid_thw"]
        assert len(grids) == 3 and len(set(map(tuple, grids.tolist()))) == 3  # three different image sizes

    single = [_reference_logprobs(model, reference) for reference in setup.references]
    single_loss = sum(-(lp * r.weights[1:]).sum() for lp, r in zip(single, setup.references, strict=True))
    single_grads = _gradients(model, single_loss)

    packed = -token_nll(packed_logits(model, batch), batch.labels)
    packed_loss = -(packed * batch.loss_weights).sum()
    packed_grads = _gradients(model, packed_loss)

    for got, expected in zip(_per_sample(batch, packed), single, strict=True):
        torch.testing.assert_close(got, expected.detach(), atol=LOGPROB_ATOL, rtol=0)
    torch.testing.assert_close(packed_loss, single_loss, rtol=LOSS_RTOL, atol=0)
    assert packed_grads.keys() == single_grads.keys()
    if family != "qwen3":
        assert any(name.startswith("model.visual.") for name in packed_grads)  # the vision tower is trained too
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, single_grads[name], atol=GRAD_ATOL, rtol=GRAD_RTOL, msg=name)


def _with_2d_mask(batch: PackedBatch) -> dict[str, object]:
    return {"position_ids": batch.position_ids, "attention_mask": torch.ones_like(batch.input_ids), "use_cache": False}


def _with_cache(batch: PackedBatch) -> dict[str, object]:
    return {"position_ids": batch.position_ids}  # the configs default to use_cache=True


def _without_text_row(batch: PackedBatch) -> dict[str, object]:
    return {"position_ids": batch.position_ids[1:], "use_cache": False}


DROPPED_BOUNDARIES: list[tuple[str, Callable[[PackedBatch], dict[str, object]]]] = [
    ("qwen2_5_vl", _with_2d_mask),
    ("qwen2_5_vl", _without_text_row),
    ("qwen3_vl", _with_cache),
    ("glm4v", _without_text_row),
    ("qwen3", _with_2d_mask),
]


@pytest.mark.parametrize(("family", "drop"), DROPPED_BOUNDARIES, ids=lambda v: getattr(v, "__name__", v))
def test_without_sample_boundaries_later_samples_differ(
    family: str, drop: Callable[[PackedBatch], dict[str, object]], case: Callable[[str, str], Case]
) -> None:
    """Same packed row and per-sample positions, but a plain causal mask: samples see their predecessors."""
    setup = case(family, "sdpa")
    model, batch = setup.model, setup.batch
    with torch.no_grad():
        single = [_reference_logprobs(model, reference) for reference in setup.references]
        logits = model(input_ids=batch.input_ids, **batch.pixel_kwargs, **drop(batch)).logits
    crossed = list(_per_sample(batch, -token_nll(logits, batch.labels)))
    torch.testing.assert_close(crossed[0], single[0], atol=LOGPROB_ATOL, rtol=0)  # nothing precedes sample 0
    for got, expected in zip(crossed[1:], single[1:], strict=True):
        assert (got - expected).abs().max() > 100 * LOGPROB_ATOL


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_transformers_builds_a_block_diagonal_causal_mask_from_the_boundary_row(
    attn: str, case: Callable[[str, str], Case]
) -> None:
    setup = case("qwen3", attn)
    batch, config = setup.batch, setup.model.config
    mask = create_causal_mask(
        config=config,
        inputs_embeds=torch.zeros(1, batch.num_tokens, config.hidden_size),
        attention_mask=None,
        past_key_values=None,
        position_ids=batch.position_ids,
    )
    allowed = mask[0, 0] if mask.dtype == torch.bool else mask[0, 0] == 0
    sample = torch.repeat_interleave(torch.arange(len(batch.sample_ids)), batch.cu_seqlens.diff().long())
    token = torch.arange(batch.num_tokens)
    expected = (sample[:, None] == sample[None, :]) & (token[:, None] >= token[None, :])
    assert torch.equal(allowed, expected)


def test_attention_implementations_not_proven_are_refused() -> None:
    with pytest.raises(ContractError) as error:
        check_packed_attention(type("Config", (), {"_attn_implementation": "flex_attention"})())
    assert error.value.field == "attn_implementation"


@pytest.mark.parametrize(
    ("position_ids", "field"),
    [
        (torch.tensor([[[0, 1, 0, 1]]] * 3), "position_ids"),  # mrope rows without the text row
        (torch.tensor([[0, 1, 2, 3]]), "position_ids"),  # one sample's numbering across two samples
        (torch.tensor([[0, 1, 0]]), "cu_seqlens"),  # row shorter than the samples
    ],
)
def test_positions_that_would_hide_boundaries_from_transformers_are_refused(
    position_ids: torch.Tensor, field: str
) -> None:
    with pytest.raises(ContractError) as error:
        check_boundaries(position_ids, torch.tensor([0, 2, 4], dtype=torch.int32))
    assert error.value.field == field
