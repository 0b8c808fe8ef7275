"""The tiny processor folders load with the real transformers classes and behave like the real families."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from tokenizers import Tokenizer

from foveal.renderers.errors import UnknownFamily
from foveal.renderers.tiny import FAMILIES, QWEN_VL_FAMILIES, TinyTokenIds, build_tiny_processor, family_spec

# Placeholder counts worked out by hand from smart_resize (sides rounded to multiples of patch*merge, then
# (h/patch)*(w/patch)/merge**2): Qwen2 families use 28-pixel cells, Qwen3-VL 32-pixel cells.
EXPECTED_GRIDS = {
    ("qwen2_vl", (224, 224)): (1, 16, 16),
    ("qwen2_5_vl", (224, 224)): (1, 16, 16),
    ("qwen3_vl", (224, 224)): (1, 14, 14),
    ("qwen2_vl", (320, 200)): (1, 14, 22),
    ("qwen2_5_vl", (320, 200)): (1, 14, 22),
    ("qwen3_vl", (320, 200)): (1, 12, 20),
    ("qwen3_vl_thinking", (224, 224)): (1, 14, 14),  # the Qwen3-VL processor
    ("qwen3_vl_thinking", (320, 200)): (1, 12, 20),
}


def drawn_image(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).ellipse((width // 8, height // 8, width // 2, height // 2), fill="red")
    return image


def expand_image_pads(text: str, counts: list[int]) -> str:
    """What the Qwen processors do to a rendered prompt: one <|image_pad|> per merged patch, per image."""
    pieces = text.split("<|image_pad|>")
    assert len(pieces) == len(counts) + 1
    return pieces[0] + "".join("<|image_pad|>" * n + piece for n, piece in zip(counts, pieces[1:], strict=True))


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "gemma3"])
def test_tokenizer_has_the_real_special_tokens_eos_and_pad(family, tiny_tokenizer, tiny_processor_dir):
    tokenizer = tiny_tokenizer(family)
    spec = family_spec(family)
    ids = TinyTokenIds.from_folder(tiny_processor_dir(family))
    expected = ("<|im_end|>", "<|endoftext|>", None)
    if family == "llama3":
        expected = ("<|eot_id|>", "<|finetune_right_pad_id|>", "<|begin_of_text|>")
    if family == "glm4v":
        expected = ("<|endoftext|>", "<|endoftext|>", None)
    if family == "gpt_oss":
        expected = ("<|return|>", "<|endoftext|>", None)
    if family == "smolvlm":
        expected = ("<end_of_utterance>", "<|im_end|>", None)
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == expected
    assert tokenizer.eos_token_id == ids.eos_id and tokenizer.pad_token_id == ids.pad_id
    assert tokenizer.bos_token_id == ids.bos_id
    # Added tokens follow the learned vocabulary, contiguous and in the real order, as 151643.. in Qwen.
    first = ids.vocab_size - len(spec.added_tokens)
    assert [ids.id_of(t) for t in spec.added_tokens] == list(range(first, ids.vocab_size))
    assert tokenizer.convert_tokens_to_ids(list(spec.added_tokens)) == [ids.id_of(t) for t in spec.added_tokens]
    assert len(tokenizer) == ids.vocab_size
    assert 2000 <= ids.vocab_size <= 2100


def test_gemma3_tokenizer_has_the_real_ids_order_pipeline_and_image_tokens(tiny_tokenizer, tiny_processor_dir):
    tokenizer = tiny_tokenizer("gemma3")
    ids = TinyTokenIds.from_folder(tiny_processor_dir("gemma3"))
    assert type(tokenizer).__name__ == "GemmaTokenizer"
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<eos>", "<pad>", "<bos>")
    head = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    assert tokenizer.convert_tokens_to_ids(head) == list(range(7))  # 0..4 as the real ids; 105, 106 there
    assert tokenizer.convert_tokens_to_ids(["<0x00>", "<0xFF>"]) == [7, 262]  # byte fallback pieces
    tail = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    assert tokenizer.convert_tokens_to_ids(tail) == [ids.vocab_size - 3, ids.vocab_size - 2, ids.vocab_size - 1]
    assert (tokenizer.boi_token, tokenizer.eoi_token, tokenizer.image_token) == tuple(tail)
    assert tokenizer.image_token_id == ids.vocab_size - 1 and len(tokenizer) == ids.vocab_size == 2048
    assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id  # add_bos_token, as the real tokenizer
    assert tokenizer.tokenize(" the red circle") == ["▁the", "▁red", "▁circle"]
    text = "<start_of_turn>user\nWhat's 2+2? déjà vu 🙂<end_of_turn>\n"
    encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(encoded) == text
    assert tokenizer.decode(encoded, skip_special_tokens=True) == "user\nWhat's 2+2? déjà vu 🙂\n"
    raw = Tokenizer.from_file(str(tiny_processor_dir("gemma3") / "tokenizer.json"))
    assert raw.encode(text, add_special_tokens=False).ids == encoded


def test_gemma3_processor_expands_every_image_to_the_same_framed_run(tiny_processor_dir, tiny_tokenizer):
    from transformers import AutoProcessor

    folder = tiny_processor_dir("gemma3")
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor).__name__ == "Gemma3Processor" and processor.image_seq_length == 4
    config = json.loads((folder / "preprocessor_config.json").read_text())
    assert config["size"] == {"height": 56, "width": 56} and config["do_pan_and_scan"] is None
    assert json.loads((folder / "processor_config.json").read_text()) == {
        "image_seq_length": 4,
        "processor_class": "Gemma3Processor",
    }
    soft = "<image_soft_token>"
    assert processor.full_image_sequence == f"\n\n<start_of_image>{soft * 4}<end_of_image>\n\n"
    for size in ((224, 224), (320, 200), (29, 300)):
        out = processor(text="<start_of_image>", images=[drawn_image(*size)], return_tensors="np")
        assert out["pixel_values"].shape == (1, 3, 56, 56)
        assert list(out["input_ids"][0]).count(tiny_tokenizer("gemma3").image_token_id) == 4


def test_thinking_and_tool_tags_are_single_tokens_kept_by_skip_special_tokens(tiny_tokenizer):
    tokenizer = tiny_tokenizer("qwen3")
    text = "<|im_start|>assistant\n<think>\nhmm\n</think>\n\n<tool_call>\n{}\n</tool_call><|im_end|>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for tag in ("<|im_start|>", "<think>", "</think>", "<tool_call>", "</tool_call>", "<|im_end|>"):
        assert tokenizer.convert_tokens_to_ids(tag) in ids
    kept = "assistant\n<think>\nhmm\n</think>\n\n<tool_call>\n{}\n</tool_call>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == kept


def test_llama3_tokens_are_all_special_and_encoding_adds_the_bos_like_the_real_tokenizer(tiny_tokenizer):
    tokenizer = tiny_tokenizer("llama3")
    assert type(tokenizer).__name__ == "TokenizersBackend"  # PreTrainedTokenizerFast: tokenizer.json as is
    bos = tokenizer.bos_token_id
    assert tokenizer("hi")["input_ids"][0] == bos and tokenizer("hi", add_special_tokens=False)["input_ids"][0] != bos
    text = "<|start_header_id|>assistant<|end_header_id|>\n\nhi<|eot_id|><|python_tag|>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "assistant\n\nhi"


def test_bpe_has_learned_realistic_merges(tiny_tokenizer):
    tokenizer = tiny_tokenizer("qwen2_5_vl")
    for word in (" the", " image", " color", " answer", '":', ' {"', "\n\n"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    # Digits are split one by one, as Qwen's pre-tokenizer does.
    assert len(tokenizer("12345", add_special_tokens=False)["input_ids"]) == 5


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=60))
def test_encoding_is_lossless_up_to_nfc(tiny_tokenizer, text):
    tokenizer = tiny_tokenizer("qwen3")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_raw_tokenizer_json_encodes_like_the_transformers_tokenizer(tiny_tokenizer, tiny_processor_dir):
    raw = Tokenizer.from_file(str(tiny_processor_dir("qwen3_vl") / "tokenizer.json"))
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What's 2+2? déjà vu<|im_end|>\n"
    assert raw.encode(text).ids == tiny_tokenizer("qwen3_vl")(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("size", [(224, 224), (320, 200)])
@pytest.mark.parametrize("family", QWEN_VL_FAMILIES)
def test_one_image_expands_to_grid_prod_over_merge_squared_placeholders(
    family, size, tiny_tokenizer, tiny_image_processor
):
    tokenizer, image_processor = tiny_tokenizer(family), tiny_image_processor(family)
    out = image_processor(images=[drawn_image(*size)], return_tensors="np")
    grid = out["image_grid_thw"][0]
    assert tuple(grid) == EXPECTED_GRIDS[family, size]
    count = int(np.prod(grid)) // image_processor.merge_size**2
    spec = family_spec(family).vision
    assert out["pixel_values"].shape == (np.prod(grid), 3 * spec.temporal_patch_size * spec.patch_size**2)

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is red?"}]}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(expand_image_pads(prompt, [count]), add_special_tokens=False)["input_ids"]
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert ids.count(image_pad) == count
    start = ids.index(tokenizer.convert_tokens_to_ids("<|vision_start|>"))
    assert ids[start + 1 : start + 1 + count] == [image_pad] * count
    assert ids[start + 1 + count] == tokenizer.convert_tokens_to_ids("<|vision_end|>")


@pytest.mark.parametrize("family", QWEN_VL_FAMILIES)
def test_large_images_are_capped_at_the_tiny_max_pixels(family, tiny_image_processor):
    image_processor = tiny_image_processor(family)
    grid = image_processor(images=[drawn_image(1600, 1200)])["image_grid_thw"][0]
    tokens = int(np.prod(grid)) // image_processor.merge_size**2
    assert 0 < tokens <= 256


def test_preprocessor_configs_use_each_real_familys_keys(tiny_processor_dir, tiny_image_processor):
    qwen2 = json.loads((tiny_processor_dir("qwen2_5_vl") / "preprocessor_config.json").read_text())
    qwen3 = json.loads((tiny_processor_dir("qwen3_vl") / "preprocessor_config.json").read_text())
    assert (qwen2["min_pixels"], qwen2["max_pixels"], qwen2["patch_size"]) == (3136, 200704, 14)
    assert qwen2["processor_class"] == "Qwen2_5_VLProcessor" and "size" not in qwen2
    assert qwen3["size"] == {"longest_edge": 262144, "shortest_edge": 4096} and qwen3["patch_size"] == 16
    assert (qwen3["processor_class"], qwen3["image_mean"]) == ("Qwen3VLProcessor", [0.5, 0.5, 0.5])
    loaded = tiny_image_processor("qwen3_vl")
    assert (loaded.size.shortest_edge, loaded.size.longest_edge, loaded.merge_size) == (4096, 262144, 2)
    assert not (tiny_processor_dir("qwen3") / "preprocessor_config.json").exists()


def test_unknown_family_is_rejected_with_the_known_ones(tmp_path):
    with pytest.raises(UnknownFamily, match="qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3, llama3"):
        build_tiny_processor("llava", tmp_path)
    assert not list(tmp_path.iterdir())
