"""The tiny Gemma 3 tokenizer: a SentencePiece-style BPE with byte fallback, laid out like the real one.

transformers' `GemmaTokenizer` rebuilds its pipeline from tokenizer.json's vocabulary and merges when it
loads: spaces normalized to "▁", no pre-tokenizer split (its `Split(" ")` runs after the normalizer has
removed every space), BPE with byte fallback (`<0x00>`..`<0xFF>`), and a decoder that undoes both. The
tiny tokenizer.json is written with that same pipeline, so the raw `tokenizers` file and the transformers
tokenizer encode identically. Merges are learned with a "▁"-prefix split (words like "▁circle", as
SentencePiece learns them) from the shared training corpus.

Ids follow the real order: `<pad>` 0, `<eos>` 1, `<bos>` 2, `<unk>` 3, `<mask>` 4, then `<start_of_turn>`,
`<end_of_turn>` (105 and 106 in the real vocabulary), the 256 byte tokens, the learned pieces, and last
`<start_of_image>`, `<end_of_image>` (255999, 256000) and `<image_soft_token>` (262144, the real last id).
The added tokens are all special; the post-processor adds `<bos>` when encoding with special tokens
(`add_bos_token`), as the real tokenizer does; chat templates write it themselves.
"""

from __future__ import annotations

import functools

import orjson
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import BPE

from foveal.renderers.tiny.bpe import MIN_FREQUENCY, corpus_digest
from foveal.renderers.tiny.corpus import training_corpus

HEAD_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")
TAIL_TOKENS = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")
BYTE_TOKENS = tuple(f"<0x{value:02X}>" for value in range(256))
VOCAB_SIZE = 2048
"""Every id together: head, bytes, learned pieces, tail."""
SPACE = "▁"


def bpe_recipe() -> dict[str, object]:
    """Everything that decides the vocabulary; part of the cache key."""
    return {
        "corpus_xxh3_128": corpus_digest(),
        "vocab_size": VOCAB_SIZE,
        "min_frequency": MIN_FREQUENCY,
        "pipeline": "gemma: Replace(' ', '▁'), BPE byte_fallback, learned with a ▁-prefix split",
        "head": list(HEAD_TOKENS),
        "tail": list(TAIL_TOKENS),
    }


@functools.cache
def _learned() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The learned pieces (in id order) and merges; trained once per process."""
    tokenizer = Tokenizer(BPE(byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", SPACE)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    budget = VOCAB_SIZE - len(HEAD_TOKENS) - len(BYTE_TOKENS) - len(TAIL_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=budget, min_frequency=MIN_FREQUENCY, show_progress=False)
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    model = orjson.loads(tokenizer.to_str())["model"]
    pieces = tuple(token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1]))
    merges = tuple(tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in model["merges"])
    return pieces, merges  # type: ignore[return-value]


def gemma_tokenizer() -> Tokenizer:
    """The tiny Gemma 3 tokenizer with the real pipeline, special tokens and BOS post-processor."""
    pieces, merges = _learned()
    reserved = {*HEAD_TOKENS, *BYTE_TOKENS, *TAIL_TOKENS}
    ordered = [*HEAD_TOKENS, *BYTE_TOKENS, *(piece for piece in pieces if piece not in reserved), *TAIL_TOKENS]
    vocab = {token: index for index, token in enumerate(ordered)}
    model = BPE(vocab=vocab, merges=list(merges), unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Replace(" ", SPACE)
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in HEAD_TOKENS])
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in TAIL_TOKENS])
    bos = "<bos>"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, vocab[bos])]
    )
    return tokenizer
