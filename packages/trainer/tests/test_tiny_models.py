"""Tiny models: real classes, right placeholder counts, a working training step, exact reloads."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoTokenizer

from foveal.renderers.factory import load_renderer
from foveal.renderers.tiny import QWEN_VL_FAMILIES, TinyTokenIds, family_spec
from foveal.trainer.smoke import draw_image
from foveal.trainer.tiny_models import build_tiny_model, init_tiny_model

# Worked out by hand from smart_resize: sides rounded to multiples of patch*merge (28 px for the Qwen2
# families, 32 px for Qwen3-VL), grid = sides / patch.
EXPECTED_GRIDS = {
    ("qwen2_vl", (224, 224)): [1, 16, 16],
    ("qwen2_5_vl", (224, 224)): [1, 16, 16],
    ("qwen3_vl", (224, 224)): [1, 14, 14],
    ("qwen2_vl", (320, 200)): [1, 14, 22],
    ("qwen2_5_vl", (320, 200)): [1, 14, 22],
    ("qwen3_vl", (320, 200)): [1, 12, 20],
    ("qwen3_vl_thinking", (224, 224)): [1, 14, 14],  # the Qwen3-VL model and processor
    ("qwen3_vl_thinking", (320, 200)): [1, 12, 20],
}
CLASS_NAMES = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_vl_thinking": "Qwen3VLForConditionalGeneration",
    "qwen3": "Qwen3ForCausalLM",
    "llama3": "LlamaForCausalLM",
    "gemma3": "Gemma3ForConditionalGeneration",
    "glm4v": "Glm4vForConditionalGeneration",
}
TEXT_FAMILIES = ("qwen3", "llama3")


def image_batch(processor, size=(320, 200)):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shapes are there?"}]},
        {"role": "assistant", "content": "A red circle and a blue square."},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    return processor(text=[text], images=[draw_image(*size)], return_tensors="pt")


def text_batch(tokenizer):
    messages = [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Two plus two is four."},
    ]
    return tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)


def labels_without_placeholders(batch, image_token_id):
    return batch["input_ids"].masked_fill(batch["input_ids"] == image_token_id, -100)


@pytest.mark.parametrize("size", [(224, 224), (320, 200)])
@pytest.mark.parametrize("family", QWEN_VL_FAMILIES)
def test_full_processor_expands_an_image_to_grid_prod_over_merge_squared(family, size, tiny_processor):
    processor = tiny_processor(family)
    batch = image_batch(processor, size)
    grid = batch["image_grid_thw"][0]
    assert grid.tolist() == EXPECTED_GRIDS[family, size]
    expected = int(grid.prod()) // processor.image_processor.merge_size**2
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((batch["input_ids"] == image_pad).sum()) == expected
    assert batch["pixel_values"].shape[0] == int(grid.prod())


@pytest.mark.parametrize("family", QWEN_VL_FAMILIES)
def test_vlm_forward_backward_on_cpu_has_finite_loss_and_gradients_in_both_towers(
    family, tiny_processor, load_tiny_model
):
    model = load_tiny_model(family).train()
    batch = image_batch(tiny_processor(family))
    output = model(**batch, labels=labels_without_placeholders(batch, model.config.image_token_id))
    output.loss.backward()
    assert math.isfinite(output.loss.item())
    assert output.logits.shape == (1, batch["input_ids"].shape[1], model.config.text_config.vocab_size)
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert any(g.abs().sum() > 0 for name, g in grads.items() if ".visual." in name)
    assert any(g.abs().sum() > 0 for name, g in grads.items() if ".language_model." in name)


def test_qwen3_text_forward_backward_on_cpu(tiny_model_dir, load_tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir("qwen3"))
    batch = text_batch(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<think>") in batch["input_ids"][0].tolist()
    model = load_tiny_model("qwen3").train()
    output = model(**batch, labels=batch["input_ids"])
    output.loss.backward()
    assert math.isfinite(output.loss.item())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as the small real Qwen3 models
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_llama3_text_forward_backward_on_cpu(tiny_model_dir, load_tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir("llama3"))
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
        return_tensors="pt",
        return_dict=True,
    )
    ids = batch["input_ids"][0].tolist()
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    model = load_tiny_model("llama3").train()
    output = model(**batch, labels=batch["input_ids"])
    output.loss.backward()
    assert math.isfinite(output.loss.item())
    assert model.lm_head.weight is not model.model.embed_tokens.weight  # untied, as Llama 3.1 8B
    assert model.config.rope_parameters["rope_type"] == "llama3"


@pytest.mark.parametrize("family", [*QWEN_VL_FAMILIES, *TEXT_FAMILIES])
def test_config_uses_the_tokenizers_ids_and_real_shapes(family, tiny_model_dir, load_tiny_model):
    folder = tiny_model_dir(family)
    tokenizer, ids = AutoTokenizer.from_pretrained(folder), TinyTokenIds.from_folder(folder)
    model = load_tiny_model(family)
    assert type(model).__name__ == CLASS_NAMES[family]
    text = model.config.get_text_config()
    assert text.vocab_size == len(tokenizer) == ids.vocab_size
    if family == "llama3":  # bos <|begin_of_text|>, and every stop token is an eos, as the real configs
        stops = tokenizer.convert_tokens_to_ids(["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"])
        assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (ids.bos_id, stops, ids.pad_id)
        assert tokenizer.eos_token_id in stops and model.generation_config.eos_token_id == stops
    else:
        assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (ids.pad_id, ids.eos_id, ids.pad_id)
        assert model.generation_config.eos_token_id == [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert (text.hidden_size, text.num_hidden_layers) == (64, 2)
    if family_spec(family).is_vlm:
        config = model.config
        assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
        assert config.vision_config.depth == 2
        assert config.vision_config.patch_size == family_spec(family).vision.patch_size
        head_dim = text.hidden_size // text.num_attention_heads
        assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2


@pytest.mark.parametrize("family", [*QWEN_VL_FAMILIES, *TEXT_FAMILIES])
def test_reload_through_auto_classes_gives_the_built_models_logits(
    family, tiny_model_dir, tiny_processor, load_tiny_model
):
    folder = tiny_model_dir(family)
    spec = family_spec(family)
    built = init_tiny_model(spec, TinyTokenIds.from_folder(folder))
    loaded = load_tiny_model(family).eval()
    batch = image_batch(tiny_processor(family)) if spec.is_vlm else text_batch(AutoTokenizer.from_pretrained(folder))
    with torch.no_grad():
        assert torch.equal(built(**batch).logits, loaded(**batch).logits)


def gemma3_batch(processor, size=(320, 200)):
    """Gemma 3 through its own processor: the chat template's image marker expanded to the soft-token run."""
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": draw_image(*size)}, {"type": "text", "text": "Shapes?"}],
        },
        {"role": "assistant", "content": "A red circle."},
    ]
    return processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")


def test_gemma3_forward_backward_with_an_image_on_cpu(tiny_processor, load_tiny_model):
    processor = tiny_processor("gemma3")
    batch = gemma3_batch(processor)
    model = load_tiny_model("gemma3").train()
    assert type(model).__name__ == CLASS_NAMES["gemma3"]
    image_token = model.config.image_token_id
    ids = batch["input_ids"][0].tolist()
    assert ids.count(image_token) == model.config.mm_tokens_per_image == processor.image_seq_length == 4
    assert ids.count(processor.tokenizer.bos_token_id) == 1 and batch["pixel_values"].shape == (1, 3, 56, 56)
    assert batch["token_type_ids"][0].tolist() == [int(token == image_token) for token in ids]
    output = model(**batch, labels=labels_without_placeholders(batch, image_token))
    output.loss.backward()
    assert math.isfinite(output.loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert any(g.abs().sum() > 0 for name, g in grads.items() if ".vision_tower." in name)
    assert any(g.abs().sum() > 0 for name, g in grads.items() if ".language_model." in name)


def test_gemma3_config_uses_the_tokenizers_ids_and_the_real_arithmetic(tiny_model_dir, load_tiny_model):
    folder = tiny_model_dir("gemma3")
    tokenizer, ids = AutoTokenizer.from_pretrained(folder), TinyTokenIds.from_folder(folder)
    model = load_tiny_model("gemma3")
    config, text = model.config, model.config.text_config
    assert text.vocab_size == len(tokenizer) == ids.vocab_size
    stops = tokenizer.convert_tokens_to_ids(["<eos>", "<end_of_turn>"])  # ids 1 and 106 in the real config
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (ids.bos_id, stops, ids.pad_id)
    assert model.generation_config.eos_token_id == stops
    assert (config.image_token_id, config.boi_token_id, config.eoi_token_id) == (
        tokenizer.image_token_id,
        tokenizer.boi_token_id,
        tokenizer.eoi_token_id,
    )
    vision = config.vision_config
    patches_per_side = vision.image_size // vision.patch_size  # 56 / 7 = 8 (real: 896 / 14 = 64)
    pooling = patches_per_side // round(config.mm_tokens_per_image**0.5)
    assert (patches_per_side, pooling) == (8, 4)  # pooled 4x4, as the real model
    assert text.layer_types == ["sliding_attention", "full_attention"]
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight  # tied, as the real model
    assert model.model.multi_modal_projector.mm_input_projection_weight.abs().sum() > 0


def test_gemma3_reload_through_auto_classes_gives_the_built_models_logits(
    tiny_model_dir, tiny_processor, load_tiny_model
):
    built = init_tiny_model(family_spec("gemma3"), TinyTokenIds.from_folder(tiny_model_dir("gemma3")))
    batch = gemma3_batch(tiny_processor("gemma3"))
    with torch.no_grad():
        assert torch.equal(built(**batch).logits, load_tiny_model("gemma3").eval()(**batch).logits)


def glm4v_batch(processor, size=(320, 200)):
    """GLM-4.1V through its own processor and template (as Gemma 3's): `<|image|>` expanded to grid / 4 tokens."""
    return gemma3_batch(processor, size)


def test_glm4v_forward_backward_with_an_image_on_cpu(tiny_processor, load_tiny_model):
    processor = tiny_processor("glm4v")
    batch = glm4v_batch(processor)
    model = load_tiny_model("glm4v").train()
    assert type(model).__name__ == CLASS_NAMES["glm4v"]
    image_token = model.config.image_token_id
    assert image_token == processor.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image|>")
    grid = batch["image_grid_thw"][0]
    assert grid.tolist() == [1, 14, 22] and batch["pixel_values"].shape == (14 * 22, 3 * 2 * 14 * 14)
    ids = batch["input_ids"][0].tolist()
    assert ids.count(image_token) == int(grid.prod()) // 4
    assert batch["mm_token_type_ids"][0].tolist() == [int(token == image_token) for token in ids]
    output = model(**batch, labels=labels_without_placeholders(batch, image_token))
    output.loss.backward()
    assert math.isfinite(output.loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert any(g.abs().sum() > 0 for name, g in grads.items() if name.startswith("model.visual.blocks."))
    assert any(g.abs().sum() > 0 for name, g in grads.items() if ".language_model." in name)


def test_glm4v_config_uses_the_tokenizers_ids_and_the_real_shapes(tiny_model_dir, load_tiny_model):
    folder = tiny_model_dir("glm4v")
    tokenizer, ids = AutoTokenizer.from_pretrained(folder), TinyTokenIds.from_folder(folder)
    model = load_tiny_model("glm4v")
    config, text, vision = model.config, model.config.text_config, model.config.vision_config
    assert text.vocab_size == len(tokenizer) == ids.vocab_size
    stops = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|user|>", "<|observation|>"])
    assert (text.eos_token_id, text.pad_token_id) == (stops, tokenizer.pad_token_id)
    assert model.generation_config.eos_token_id == stops and tokenizer.eos_token_id in stops
    markers = ["<|image|>", "<|video|>", "<|begin_of_image|>", "<|end_of_image|>"]
    assert [config.image_token_id, config.video_token_id, config.image_start_token_id, config.image_end_token_id] == (
        tokenizer.convert_tokens_to_ids(markers)
    )
    spec = family_spec("glm4v").vision
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (
        spec.patch_size,
        spec.merge_size,
        spec.temporal_patch_size,
    )
    assert vision.out_hidden_size == text.hidden_size and vision.depth == 2
    # Rope on half of each head, the mrope sections covering exactly its rotary pairs (real: [8, 12, 12] of 32).
    rope = text.rope_parameters
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(rope["mrope_section"]) == int(head_dim * rope["partial_rotary_factor"]) // 2
    assert model.lm_head.weight is not model.model.language_model.embed_tokens.weight  # untied, as the 9B


def test_glm4v_reload_through_auto_classes_gives_the_built_models_logits(
    tiny_model_dir, tiny_processor, load_tiny_model
):
    built = init_tiny_model(family_spec("glm4v"), TinyTokenIds.from_folder(tiny_model_dir("glm4v")))
    batch = glm4v_batch(tiny_processor("glm4v"))
    with torch.no_grad():
        assert torch.equal(built(**batch).logits, load_tiny_model("glm4v").eval()(**batch).logits)


def test_qwen3_vl_thinking_is_the_qwen3_vl_model_under_the_thinking_template(tiny_model_dir):
    thinking, instruct = tiny_model_dir("qwen3_vl_thinking"), tiny_model_dir("qwen3_vl")
    for name in ("model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json"):
        assert (thinking / name).read_bytes() == (instruct / name).read_bytes(), name
    template = AutoTokenizer.from_pretrained(thinking).apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert template.endswith("<|im_start|>assistant\n<think>\n")
    assert load_renderer(thinking).family == "qwen3_vl_thinking" and load_renderer(instruct).family == "qwen3_vl"


def test_building_again_elsewhere_gives_identical_files(tmp_path, tiny_model_dir):
    first, second = tiny_model_dir("qwen3_vl"), build_tiny_model("qwen3_vl", tmp_path)
    assert first.name == second.name
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
