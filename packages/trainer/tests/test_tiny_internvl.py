"""The tiny InternVL 3.5 model: the real InternVLForConditionalGeneration at tiny size runs a
forward and backward pass on CPU with a tiled image that Foveal's renderer laid out."""

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


def test_internvl_forward_backward_with_a_tiled_image_rendered_by_foveal(
    tiny_model_dir, tiny_processor, load_tiny_model, tmp_path
):
    folder = tiny_model_dir("internvl")
    processor = tiny_processor("internvl")
    image = draw_image(100, 40)  # 5 x 2 tiles of 28 px plus a thumbnail: 11 tiles of 4 tokens
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Shapes?"}]},
        {"role": "assistant", "content": "A red circle."},
    ]
    batch = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    store = ImageStore(tmp_path / "assets", MultimodalConfig(), durable=False)
    rendered = load_renderer(folder, store=store).render(messages)
    assert list(rendered.token_ids) == batch["input_ids"][0].tolist()
    (placed,) = rendered.images
    tiles = placed.descriptor.payload["image_grid_thw"][0]
    assert batch["pixel_values"].shape == (tiles, 3, 28, 28) and tiles == 11

    model = load_tiny_model("internvl").train()
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    image_token = model.config.image_token_id
    assert image_token == processor.image_token_id and model.config.image_seq_length == processor.image_seq_length
    assert batch["input_ids"][0].tolist().count(image_token) == placed.length == tiles * model.config.image_seq_length
    labels = torch.tensor(rendered.token_ids).masked_fill(torch.tensor(rendered.loss_mask) == 0, -100)[None]
    output = model(**batch, labels=labels)
    output.loss.backward()
    assert math.isfinite(output.loss.item())
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert any(g.abs().sum() > 0 for name, g in grads.items() if "vision_tower" in name)
    assert any(g.abs().sum() > 0 for name, g in grads.items() if "multi_modal_projector" in name)


def test_internvl_reload_gives_the_built_models_logits(tiny_model_dir, load_tiny_model):
    folder = tiny_model_dir("internvl")
    built = init_tiny_model(family_spec("internvl"), TinyTokenIds.from_folder(folder))
    loaded = load_tiny_model("internvl").eval()
    ids = AutoTokenizer.from_pretrained(folder)("hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(built(input_ids=ids).logits, loaded(input_ids=ids).logits)
