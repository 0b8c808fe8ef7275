"""Conversations as each tiny model takes them alone: the references of the packed-attention tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoTokenizer
from transformers.processing_utils import ProcessorMixin

from foveal.renderers.tiny import family_spec

Picture = tuple[tuple[int, int], str]
"""An image to draw: (width, height) and the colour of the ellipse on it."""
Conversation = tuple[list[Picture], str, str]
"""(images, question, answer)."""
SingleInputs = Callable[[str, Sequence[Conversation]], list[dict[str, torch.Tensor]]]


def _draw(picture: Picture) -> Image.Image:
    size, color = picture
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((size[0] // 5, size[1] // 5, 4 * size[0] // 5, 4 * size[1] // 5), fill=color)
    return image


@pytest.fixture(scope="session")
def single_inputs(
    tiny_model_dir: Callable[[str], Path], tiny_processor: Callable[[str], ProcessorMixin]
) -> SingleInputs:
    """(family, conversations) -> each conversation through the family's processor (a text model's tokenizer)."""

    def encode(family: str, conversations: Sequence[Conversation]) -> list[dict[str, torch.Tensor]]:
        singles = []
        for pictures, question, answer in conversations:
            reply = {"role": "assistant", "content": answer}
            if not family_spec(family).is_vlm:
                chat = [{"role": "user", "content": question}, reply]
                encoded = AutoTokenizer.from_pretrained(tiny_model_dir(family)).apply_chat_template(chat)
                singles.append({"input_ids": torch.tensor([encoded["input_ids"]])})
                continue
            processor = tiny_processor(family)
            content = [{"type": "image"} for _ in pictures] + [{"type": "text", "text": question}]
            text = processor.apply_chat_template([{"role": "user", "content": content}, reply], tokenize=False)
            images = [_draw(picture) for picture in pictures] or None
            out = processor(text=[text], images=images, return_tensors="pt", return_mm_token_type_ids=True)
            singles.append({k: v for k, v in out.items() if k != "attention_mask"})
        return singles

    return encode
