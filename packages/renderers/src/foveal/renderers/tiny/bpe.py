"""Train the tiny byte-level BPE with the real Qwen2 tokenizer pipeline, then add a family's tokens.

The pipeline (NFC normalizer, Qwen2's split regex, byte-level mapping without prefix space, byte-level
decoder) is the one `transformers.Qwen2Tokenizer` rebuilds when it loads a tokenizer.json, so the raw
`tokenizers` file and the transformers tokenizer encode identically. Added tokens get the ids after the
learned vocabulary, in the real order, like <|endoftext|> = 151643 in the real models.
"""

from __future__ import annotations

import functools

import xxhash
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import BPE

from foveal.renderers.tiny.corpus import training_corpus
from foveal.renderers.tiny.families import FamilySpec

# Qwen2's pre-tokenization regex (transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
BPE_VOCAB_SIZE = 2048
MIN_FREQUENCY = 2


def bpe_recipe() -> dict[str, object]:
    """Everything that decides the learned vocabulary; part of the cache key."""
    return {
        "corpus_xxh3_128": corpus_digest(),
        "vocab_size": BPE_VOCAB_SIZE,
        "min_frequency": MIN_FREQUENCY,
        "pretokenize_regex": PRETOKENIZE_REGEX,
        "normalizer": "NFC",
    }


@functools.cache
def corpus_digest() -> str:
    return xxhash.xxh3_128_hexdigest("\x00".join(training_corpus()).encode())


def _empty_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


@functools.cache
def _trained_json() -> str:
    """The trained base tokenizer, serialized; trained once per process and shared by all families."""
    tokenizer = _empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=MIN_FREQUENCY,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    return tokenizer.to_str()


def family_tokenizer(spec: FamilySpec) -> Tokenizer:
    """The trained BPE plus the family's added tokens, marked special or not as in the real tokenizer.

    A family with a `bos_token` (Llama 3) also gets the real post-processor that puts it before every
    encoding made with add_special_tokens; chat templates write it themselves and are encoded without it.
    """
    tokenizer = Tokenizer.from_str(_trained_json())
    tokenizer.add_tokens([AddedToken(t, special=spec.is_special(t), normalized=False) for t in spec.added_tokens])
    if spec.bos_token is not None:
        bos = spec.bos_token
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0",
            pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, tokenizer.token_to_id(bos))],
        )
    return tokenizer
