"""The ids of a built tiny tokenizer's added tokens, read from its tokenizer.json without transformers.

Renderers need ids like <|image_pad|> and <|im_end|> (<|eot_id|> for Llama 3) to build prompts and check
placeholder spans; the ids
depend on the learned vocabulary's size, so they are read from the built folder instead of hard-coded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import orjson

from foveal.renderers.tiny.families import EOS_TOKEN, PAD_TOKEN


@dataclass(frozen=True)
class TinyTokenIds:
    """Vocabulary size and added-token ids of one tiny tokenizer."""

    vocab_size: int
    added: Mapping[str, int]
    eos_token: str = EOS_TOKEN
    pad_token: str = PAD_TOKEN
    bos_token: str | None = None

    @classmethod
    def from_folder(cls, folder: Path) -> TinyTokenIds:
        """Ids from tokenizer.json; which tokens are eos/pad/bos from tokenizer_config.json (Qwen's if absent)."""
        data = orjson.loads((Path(folder) / "tokenizer.json").read_bytes())
        added = {token["content"]: token["id"] for token in data["added_tokens"]}
        vocab_size = max([*data["model"]["vocab"].values(), *added.values()]) + 1
        config_path = Path(folder) / "tokenizer_config.json"
        config = orjson.loads(config_path.read_bytes()) if config_path.is_file() else {}
        return cls(
            vocab_size=vocab_size,
            added=MappingProxyType(added),
            eos_token=config.get("eos_token") or EOS_TOKEN,
            pad_token=config.get("pad_token") or PAD_TOKEN,
            bos_token=config.get("bos_token"),
        )

    def id_of(self, token: str) -> int:
        if token not in self.added:
            raise KeyError(f"{token!r} is not an added token of this tokenizer (has {', '.join(self.added)})")
        return self.added[token]

    @property
    def eos_id(self) -> int:
        return self.id_of(self.eos_token)

    @property
    def pad_id(self) -> int:
        return self.id_of(self.pad_token)

    @property
    def bos_id(self) -> int | None:
        """The BOS the tokenizer adds when encoding (Llama 3); None for the Qwen families, which have none."""
        return None if self.bos_token is None else self.id_of(self.bos_token)

    @property
    def im_start_id(self) -> int:
        return self.id_of("<|im_start|>")

    @property
    def im_end_id(self) -> int:
        return self.id_of("<|im_end|>")

    @property
    def vision_start_id(self) -> int:
        return self.id_of("<|vision_start|>")

    @property
    def vision_end_id(self) -> int:
        return self.id_of("<|vision_end|>")

    @property
    def image_pad_id(self) -> int:
        return self.id_of("<|image_pad|>")

    @property
    def video_pad_id(self) -> int:
        return self.id_of("<|video_pad|>")
