"""Fast, exact tokenization of the text between added tokens.

A chat template's string is tokenized by first splitting out added tokens and then running the
normalizer, pre-tokenizer and BPE on each stretch in between, independently. So encoding each stretch on
its own and concatenating gives the same ids as encoding the whole string, as long as every cut falls
next to an added token; the assembler only cuts there. Stretches repeat constantly (role headers, system
prompts, `\\n` between turns), so encodings are cached.
"""

from __future__ import annotations

import functools

from tokenizers import Tokenizer

from foveal.renderers.errors import UnknownFamily


class SegmentEncoder:
    """Encodes text stretches to ids plus each token's end offset (in characters), with an LRU cache."""

    def __init__(self, tokenizer: Tokenizer, cache_size: int = 16384) -> None:
        # A private copy without the post-processor: with add_special_tokens=False it adds no ids, and
        # dropping it keeps the raw character offsets the loss mask is computed from (no offset trimming).
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.post_processor = None
        self._added = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items()}
        self._cache_size = cache_size
        # lru_cache is thread-safe, so data-loader threads can share one renderer.
        self.encode = functools.lru_cache(maxsize=cache_size)(self._encode)

    def __reduce__(self) -> tuple[type[SegmentEncoder], tuple[Tokenizer, int]]:
        """Pickle as (tokenizer, cache size): spawned data-loader workers rebuild an empty cache."""
        return SegmentEncoder, (self._tokenizer, self._cache_size)

    def _encode(self, text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Token ids of `text` and, for each, the character offset where it ends."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return tuple(encoding.ids), tuple(end for _, end in encoding.offsets)

    def decode(self, token_ids: list[int]) -> str:
        """The text of `token_ids`, added tokens included (exactly what the model wrote)."""
        return self._tokenizer.decode(token_ids, skip_special_tokens=False)

    def token_id(self, token: str) -> int:
        """The id of an added token; UnknownFamily if this tokenizer lacks it (tokenizer and family disagree)."""
        token_id = self._added.get(token)
        if token_id is None:
            raise UnknownFamily("tokenizer.added_tokens", token, "an added token the chosen family writes")
        return token_id

    def has_token(self, token: str) -> bool:
        """Whether `token` is an added token of this tokenizer."""
        return token in self._added
