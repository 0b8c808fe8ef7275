"""The slow path the fast renderer must equal: `apply_chat_template`, then the HF processor's expansion.

This is what a user of transformers writes: tokenize the chat template's output, run the model's image
processor on each image, and repeat each `<|image_pad|>` by the processor's `prod(image_grid_thw) //
merge_size**2`. It is the oracle of the parity tests and the baseline of the rendering benchmark, so it
deliberately shares nothing with the fast path except the message models (to feed the template).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.families.base import FamilyAdapter
from foveal.renderers.locations import decode_data_url
from foveal.renderers.messages import Message, parse_messages, parse_tools


class ReferenceRenderer:
    """Token ids via the tokenizer's Jinja template and the real image processor (PIL backend)."""

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any | None,
        adapter: FamilyAdapter,
        load_image: Callable[[Any], Image.Image] | None = None,
    ) -> None:
        """`load_image` opens a message's image source (default `to_pil`); tests pass a memoized one."""
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.adapter = adapter
        self.load_image = load_image or to_pil
        self.image_token_id = tokenizer.convert_tokens_to_ids(adapter.image_token) if adapter.image_token else None

    def render_ids(
        self, messages: Sequence[Any], tools: Sequence[Any] | None = None, add_generation_prompt: bool = False
    ) -> list[int]:
        typed, specs = parse_messages(messages), parse_tools(tools)
        ids = self.tokenizer.apply_chat_template(
            self.adapter.template_messages(typed),
            tools=[tool.template_dict() for tool in specs] or None,
            add_generation_prompt=add_generation_prompt,
            tokenize=True,
            return_dict=False,
            **self.adapter.template_kwargs(),
        )
        return self._expand(list(ids), self.placeholder_counts(typed))

    def placeholder_counts(self, messages: Sequence[Message]) -> list[int]:
        """Per image, in template order (message order, then part order), the processor's token count."""
        images = [self.load_image(part.image) for message in messages for part in message.images()]
        if not images:
            return []
        grids = self.image_processor(images=images, return_tensors="np")["image_grid_thw"]
        merge = self.image_processor.merge_size
        return [int(np.prod(grid)) // merge**2 for grid in grids]

    def _expand(self, ids: list[int], counts: list[int]) -> list[int]:
        out: list[int] = []
        pending = iter(counts)
        for token in ids:
            out.extend([token] * next(pending) if token == self.image_token_id else [token])
        return out


def to_pil(source: Any) -> Image.Image:
    """Any image source a message accepts, opened the plain way (no store, no checks) and made RGB."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, bytes):
        image = Image.open(io.BytesIO(source))
    elif isinstance(source, RawImageDescriptor):
        image = Image.open(_file_path(source.raw_image_uri))
    elif isinstance(source, str) and source.startswith("data:"):
        image = Image.open(io.BytesIO(decode_data_url(source, 1 << 30)))
    else:
        image = Image.open(_file_path(str(source)))
    return image.convert("RGB")


def _file_path(location: str) -> Path:
    return Path(unquote(urlsplit(location).path)) if location.startswith("file:") else Path(location)
