"""Gemma 3 packed: each image attends to itself both ways, each sample only to itself, as in its own forward.

The tiny Gemma3ForConditionalGeneration (real transformers classes, random weights: one sliding-window layer of
64 tokens, one global layer), real images through the real Gemma3Processor, fp32 on CPU. The reference runs each
sample alone and unpadded through the model's own forward with the processor's own `token_type_ids`, so it shares
nothing with our packing; one sample is longer than the sliding window, so the window is exercised too.

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
from transformers import AutoConfig, AutoModelForImageTextToText
from transformers.processing_utils import ProcessorMixin

from foveal.configs.model import ModelConfig
from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackedBatch, PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.model.attention import UnsupportedAttention, attention_implementation, set_attention
from foveal.trainer.model.forward import packed_inputs, packed_logits
from foveal.trainer.model.loading import load_model, training_attention
from foveal.trainer.training.chunked_ce import packed_token_nll
from foveal.trainer.training.loss import token_nll

FAMILY = "gemma3"
LOGPROB_ATOL = 1e-5
LOSS_RTOL = 1e-6
GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-4


def _picture(size: tuple[int, int], color: str) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((size[0] // 5, size[1] // 5, 4 * size[0] // 5, 4 * size[1] // 5), fill=color)
    ImageDraw.Draw(image).line((0, size[1] - 1, size[0] - 1, 0), fill="gray", width=3)
    return image


LONG_ANSWER = " ".join(f"The shape number {i} is a {color} circle on white." for i, color in
                       enumerate(["red", "blue", "green", "yellow", "purple", "orange"]))  # fmt: skip
# (images, question, answer): one image; two images and an answer past the 64-token sliding window; text only.
CONVERSATIONS = [
    ([_picture((90, 60), "red")], "What color is the circle?", "The circle is red."),
    ([_picture((64, 120), "blue"), _picture((64, 64), "green")], "Describe both.", LONG_ANSWER),
    ([], "What is 17 * 3?", "17 * 3 = 51."),
]


@dataclass(frozen=True)
class Reference:
    inputs: dict[str, torch.Tensor]
    """The processor's output for one conversation alone: input_ids, pixel_values, token_type_ids."""
    weights: torch.Tensor


def _references(processor: ProcessorMixin) -> list[Reference]:
    generator = torch.Generator().manual_seed(0)
    references = []
    for images, question, answer in CONVERSATIONS:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
        chat = [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
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
            pixel_kwargs={"pixel_values": r.inputs["pixel_values"]} if "pixel_values" in r.inputs else {},
        )
        for i, r in enumerate(references)
    ]
    return collate_packed(samples, position_scheme(model))


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


def test_the_references_exercise_images_both_ways_and_the_sliding_window(
    references: list[Reference], load: Callable[[str], torch.nn.Module]
) -> None:
    config = load("sdpa").config
    assert [int(r.inputs["token_type_ids"].sum()) for r in references] == [4, 8, 0]
    assert references[1].inputs["input_ids"].shape[1] > config.text_config.sliding_window
    assert config.text_config.layer_types == ["sliding_attention", "full_attention"]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_gemma3_row_matches_each_sample_through_its_own_forward(
    attn: str, references: list[Reference], load: Callable[[str], torch.nn.Module]
) -> None:
    model = load(attn)
    batch = _pack(references, model)

    single = [_alone(model, reference) for reference in references]
    single_loss = sum(-(lp * r.weights[1:]).sum() for lp, r in zip(single, references, strict=True))
    single_grads = _gradients(model, single_loss)

    packed = -token_nll(packed_logits(model, batch), batch.labels)
    packed_loss = -(packed * batch.loss_weights).sum()
    packed_grads = _gradients(model, packed_loss)

    for got, expected in zip(_per_sample(batch, packed), single, strict=True):
        torch.testing.assert_close(got, expected.detach(), atol=LOGPROB_ATOL, rtol=0)
    torch.testing.assert_close(packed_loss, single_loss, rtol=LOSS_RTOL, atol=0)
    assert packed_grads.keys() == single_grads.keys()
    assert any(name.startswith("model.vision_tower.") for name in packed_grads)
    assert any(name.startswith("model.multi_modal_projector.") for name in packed_grads)
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, single_grads[name], atol=GRAD_ATOL, rtol=GRAD_RTOL, msg=name)


@torch.no_grad()
def test_without_token_type_ids_the_images_are_causal_and_miss_the_reference(
    references: list[Reference], load: Callable[[str], torch.nn.Module]
) -> None:
    """The control: the same packed row with the image blocks dropped misses every image sample by far."""
    model = load("sdpa")
    batch = _pack(references, model)
    inputs = packed_inputs(model, batch)
    assert torch.equal(inputs["token_type_ids"], (batch.input_ids == model.config.image_token_id).long())
    del inputs["token_type_ids"]
    causal = -token_nll(model(**inputs).logits, batch.labels)
    for index, (got, reference) in enumerate(zip(_per_sample(batch, causal), references, strict=True)):
        gap = float((got - _alone(model, reference)).abs().max())
        assert gap > 1e-3 if index < 2 else gap < LOGPROB_ATOL, (index, gap)


def test_image_runs_joined_across_a_sample_boundary_are_refused(load: Callable[[str], torch.nn.Module]) -> None:
    """Sample a ends on an image token and sample b starts with one: transformers would make them one block."""
    model = load("sdpa")
    image, per_image = model.config.image_token_id, model.config.mm_tokens_per_image
    pixels = torch.zeros(1, 3, 56, 56)
    a = PackSample("a", [5, 6, *[image] * per_image], [1.0] * (2 + per_image), pixel_kwargs={"pixel_values": pixels})
    b = PackSample("b", [*[image] * per_image, 7], [1.0] * (1 + per_image), pixel_kwargs={"pixel_values": pixels})
    batch = collate_packed([a, b], position_scheme(model))
    with pytest.raises(ContractError) as caught:
        packed_inputs(model, batch)
    assert caught.value.field == "input_ids" and f"token {2 + per_image}" in str(caught.value.value)


@pytest.mark.parametrize("setting", ["varlen", "flash_attention_2"])
def test_kernels_that_cannot_express_image_blocks_are_refused_naming_the_setting(
    setting: str, load: Callable[[str], torch.nn.Module], references: list[Reference]
) -> None:
    model = load("sdpa")
    with pytest.raises(UnsupportedAttention) as caught:
        set_attention(model, setting)
    assert caught.value.field == "model.attn_implementation" and caught.value.value == setting
    assert "gemma3" in caught.value.expected
    # Set behind our back (the config written directly): the forward refuses it too, before running.
    batch = _pack(references, model)
    implementation = attention_implementation(setting, model.config)
    model.config.get_text_config()._attn_implementation = implementation
    with pytest.raises(UnsupportedAttention):
        packed_inputs(model, batch)


def test_auto_attention_is_sdpa_for_gemma3_on_cuda_and_varlen_for_qwen(tiny_model_dir: Callable[[str], Path]) -> None:
    cuda = torch.device("cuda")
    gemma3 = AutoConfig.from_pretrained(tiny_model_dir(FAMILY))
    qwen = AutoConfig.from_pretrained(tiny_model_dir("qwen2_5_vl"))
    assert training_attention("auto", cuda, gemma3) == "sdpa"
    assert training_attention("auto", cuda, qwen) == "varlen"


def test_load_model_with_varlen_on_gemma3_is_one_line_naming_the_setting(
    tiny_model_dir: Callable[[str], Path],
) -> None:
    config = ModelConfig(name_or_path=str(tiny_model_dir(FAMILY)), attn_implementation="varlen")
    with pytest.raises(UnsupportedAttention, match="model.attn_implementation: sdpa, eager or flex_attention"):
        load_model(config, config.name_or_path, torch.device("cpu"))


@pytest.mark.slow  # torch compiles flex attention on CPU (inductor's C++ backend): tens of seconds per shape
@torch.no_grad()
def test_packed_gemma3_row_under_flex_matches_each_sample_alone_forward(
    references: list[Reference], load: Callable[[str], torch.nn.Module], tiny_model_dir: Callable[[str], Path]
) -> None:
    """Flex's `BlockMask` from the same composed mask function (forward only: no flex backward on CPU); the row is
    padded to its bucket by a pad sample, whose token types are 0."""
    config = ModelConfig(name_or_path=str(tiny_model_dir(FAMILY)), attn_implementation="flex_attention")
    model = load_model(config, config.name_or_path, torch.device("cpu"), training=True).eval()
    reference_model = load("sdpa").eval()
    batch = _pack(references, model)
    inputs = packed_inputs(model, batch)
    assert inputs["input_ids"].shape[1] > batch.num_tokens  # padded to the CPU flex multiple
    packed = -token_nll(packed_logits(model, batch), batch.labels)
    for got, reference in zip(_per_sample(batch, packed), references, strict=True):
        torch.testing.assert_close(got, _alone(reference_model, reference), atol=LOGPROB_ATOL, rtol=0)


def test_chunked_loss_through_the_tied_head_equals_the_full_logits_and_softcapping_is_refused(
    references: list[Reference], load: Callable[[str], torch.nn.Module]
) -> None:
    """The head is tied to the input embedding, whose sqrt(hidden) scale lives in the embedding's forward only; the
    chunked head (its weight alone) gives the model's own logits. A Gemma 2 style final softcap would not."""
    model = load("sdpa")
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    batch = _pack(references, model)
    full = packed_token_nll(model, batch, chunk_tokens=0)
    chunked = packed_token_nll(model, batch, chunk_tokens=16)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=0)
    model.config.get_text_config().final_logit_softcapping = 30.0
    with pytest.raises(ContractError) as caught:
        packed_token_nll(model, batch, chunk_tokens=16)
    assert caught.value.field == "final_logit_softcapping"
