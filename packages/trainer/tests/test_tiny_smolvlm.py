"""The tiny SmolVLM2 model: the real SmolVLMForConditionalGeneration at tiny size runs a forward and backward pass
on CPU with a split image that Foveal's renderer laid out, and its config takes its ids and sizes from the tokenizer
and the processor."""

from __future__ import annotations

import math

import torch
from transformers import AutoTokenizer

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.factory import load_renderer
from foveal.renderers.store import ImageStore
from foveal.renderers.tiny import TinyTokenIds, family_spec
from foveal.trainer.smoke import draw_image
from foveal.trainer.tiny_models import init_tiny_model


def test_smolvlm_forward_backward_with_a_split_image_rendered_by_foveal(
    tiny_model_dir, tiny_processor, load_tiny_model, tmp_path
):
    folder = tiny_model_dir("smolvlm")
    processor = tiny_processor("smolvlm")
    image = draw_image(100, 40)  # 128 x 52 -> a 128 x 64 canvas: 4 x 2 tiles of 32 px plus the global view
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Shapes?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]},
    ]
    batch = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    store = ImageStore(tmp_path / "assets", MultimodalConfig(), durable=False)
    rendered = load_renderer(folder, store=store).render(messages)
    assert list(rendered.token_ids) == batch["input_ids"][0].tolist()
    (placed,) = rendered.images
    tiles = placed.descriptor.payload["image_grid_thw"][0]
    assert batch["pixel_values"].shape == (1, tiles, 3, 32, 32) and tiles == 9

    model = load_tiny_model("smolvlm").train()
    assert type(model).__name__ == "SmolVLMForConditionalGeneration"
    image_token = model.config.image_token_id
    assert image_token == processor.image_token_id
    assert batch["input_ids"][0].tolist().count(image_token) == placed.length == tiles * processor.image_seq_len
    labels = torch.tensor(rendered.token_ids).masked_fill(torch.tensor(rendered.loss_mask) == 0, -100)[None]
    output = model(**batch, labels=labels)
    output.loss.backward()
    assert math.isfinite(output.loss.item())
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert any(g.abs().sum() > 0 for name, g in grads.items() if "vision_model" in name)
    assert any(g.abs().sum() > 0 for name, g in grads.items() if "connector" in name)


def test_smolvlm_config_uses_the_tokenizers_ids_and_the_processors_sizes(
    tiny_model_dir, tiny_processor, load_tiny_model
):
    folder = tiny_model_dir("smolvlm")
    ids = TinyTokenIds.from_folder(folder)
    config = load_tiny_model("smolvlm").config
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    assert side * side // config.scale_factor**2 == tiny_processor("smolvlm").image_seq_len == 4
    assert vision.image_size == tiny_processor("smolvlm").image_processor.max_image_size["longest_edge"]
    assert config.image_token_id == ids.id_of("<image>")
    assert config.text_config.eos_token_id == ids.id_of("<end_of_utterance>") == ids.eos_id
    assert config.text_config.pad_token_id == ids.id_of("<|im_end|>") == config.pad_token_id
    assert config.text_config.vocab_size == ids.vocab_size and config.text_config.model_type == "llama"


def test_smolvlm_reload_gives_the_built_models_logits(tiny_model_dir, load_tiny_model):
    folder = tiny_model_dir("smolvlm")
    built = init_tiny_model(family_spec("smolvlm"), TinyTokenIds.from_folder(folder))
    loaded = load_tiny_model("smolvlm").eval()
    ids = AutoTokenizer.from_pretrained(folder)("hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(built(input_ids=ids).logits, loaded(input_ids=ids).logits)
