"""The frozen tiny VLM target: weights by path, feature capture of one packed row mixing text and image chats."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedModel

from foveal.configs import MultimodalConfig, RendererConfig
from foveal.renderers.factory import build_renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.training.checkpoint import DataPosition
from foveal.trainer.data.collate import collate_packed
from foveal.trainer.dflash.blocks import plan_blocks
from foveal.trainer.dflash.data import open_dflash_data, prompt_of, with_response
from foveal.trainer.dflash.regenerate import generation_batches, regenerate
from foveal.trainer.dflash.target import FrozenTarget
from foveal.trainer.dflash.weights import TargetWeightError, resolve_target_weights
from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.data.materialize import build_materializer
from foveal.trainer.data.steps import PackingLimits, pack_step
from foveal.trainer.data.samples import render_sample

VLM = "qwen2_5_vl"
EMBED, HEAD = "model.language_model.embed_tokens.weight", "lm_head.weight"
LAYERS = (0, 1)


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny VLM as a frozen target, the mixed demo data, its renderer and materializer."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_dir = tiny_model_dir(VLM)
    run_dir = tmp_path_factory.mktemp("dflash-data")
    data = open_dflash_data("mixed:12", None, 12, 4, run_dir, seed=0)
    multimodal = MultimodalConfig(allowed_image_roots=list(data.roots))
    store = ImageStore.from_config(multimodal, run_dir, durable=False)
    renderer = build_renderer(str(model_dir), RendererConfig(), store=store, multimodal=multimodal)
    processor = AutoProcessor.from_pretrained(model_dir)
    materialize = build_materializer(renderer.adapter.layout_family, processor, store, multimodal)
    target = FrozenTarget.wrap(AutoModelForImageTextToText.from_pretrained(model_dir), LAYERS, EMBED, HEAD)
    return {"data": data, "renderer": renderer, "materialize": materialize, "target": target}


def test_weights_resolve_by_path_with_sizes_from_the_text_config(load_tiny_model: Callable[[str], Any]) -> None:
    model = load_tiny_model(VLM)
    assert getattr(model.config, "vocab_size", None) is None  # only the text_config has it
    weights = resolve_target_weights(model, EMBED, HEAD)
    text = model.config.text_config
    assert weights.embed.shape == (text.vocab_size, text.hidden_size) and weights.pad_token_id == text.pad_token_id
    assert weights.num_layers == text.num_hidden_layers
    with pytest.raises(TargetWeightError, match="dflash.embed_weight.*language_model.*got 'model.embed_tokens.weight'"):
        resolve_target_weights(model, "model.embed_tokens.weight", HEAD)
    text_model = load_tiny_model("qwen3")  # a text-only target keeps its embedding one level up (and ties it)
    tied = resolve_target_weights(text_model, "model.embed_tokens.weight", "lm_head.weight")
    assert tied.embed.data_ptr() == tied.lm_head.data_ptr()


def test_layer_ids_outside_the_target_are_refused(load_tiny_model: Callable[[str], PreTrainedModel]) -> None:
    with pytest.raises(TargetWeightError, match=r"dflash.target_layer_ids.*0\.\.1"):
        FrozenTarget.wrap(load_tiny_model(VLM), (0, 2), EMBED, HEAD)


def test_one_packed_row_mixes_image_and_text_chats_and_capture_matches_each_sample_alone(
    setup: dict[str, Any],
) -> None:
    data, renderer, target = setup["data"], setup["renderer"], setup["target"]
    samples = [render_sample(renderer, data.train[i]) for i in range(6)]  # shapes, arithmetic, shapes, ...
    limits = PackingLimits(batch_size=6, seq_len=512, micro_batch_tokens=4096)
    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    step = pack_step(samples, setup["materialize"], target.positions, limits, context, DataPosition())
    assert len(step.micro_batches) == 1 and step.samples == 6 and step.images == 3
    (batch,) = step.micro_batches
    assert batch.position_ids.shape == (4, 1, batch.num_tokens)
    assert batch.pixel_kwargs["image_grid_thw"].shape == (3, 3)

    features = target.capture(batch)
    hidden = target.weights.hidden_size
    assert features.shape == (batch.num_tokens, len(LAYERS) * hidden)

    bounds = batch.cu_seqlens.tolist()
    for index, sample in enumerate(samples):
        alone = collate_packed([setup["materialize"](sample)], target.positions)
        own = target.capture(alone)
        assert torch.allclose(features[bounds[index] : bounds[index + 1]], own, atol=1e-4), sample.sample_id
    inputs = {"input_ids": alone.input_ids, "position_ids": alone.position_ids, "use_cache": False}
    reference = target.model.model(**inputs, output_hidden_states=True).hidden_states
    assert torch.allclose(own[:, :hidden], reference[1][0], atol=1e-5)  # layer 0's output is hidden_states[1]

    blocks = plan_blocks(batch, 4, 8, 7.0, torch.Generator().manual_seed(0))
    owners = torch.bucketize(blocks.anchors, batch.cu_seqlens[1:].long(), right=True)
    assert set(owners.tolist()) == set(range(6))  # every sample, with image or without, gets anchors


def test_a_regenerated_sample_is_the_prompt_then_the_targets_greedy_tokens(setup: dict[str, Any]) -> None:
    renderer, target, materialize = setup["renderer"], setup["target"], setup["materialize"]
    prompt = prompt_of(renderer, setup["data"].train[0])
    assert prompt.mm_refs and sum(prompt.loss_weights) == 0
    [response] = target.greedy_continuations([materialize(prompt)], 6, renderer.stop_token_ids)
    assert 1 <= len(response) <= 6
    sample = with_response(prompt, response)
    assert sample.token_ids[-len(response) :] == tuple(response) and sample.mm_refs == prompt.mm_refs
    assert sample.loss_weights == (0.0,) * prompt.num_tokens + (1.0,) * len(response)
    ids = torch.tensor([sample.token_ids[:-1]])
    batch = collate_packed([materialize(sample)], target.positions)
    logits = target.model(
        input_ids=ids, position_ids=batch.position_ids[..., :-1], **batch.pixel_kwargs, use_cache=False,
    ).logits  # fmt: skip
    assert logits[0, prompt.num_tokens - 1 :].argmax(-1).tolist() == list(response)


def test_batched_generation_answers_each_prompt_as_it_would_alone(setup: dict[str, Any]) -> None:
    """Left-padded batches of image and text prompts of different lengths give each prompt's own greedy answer."""
    renderer, target, materialize, train = setup["renderer"], setup["target"], setup["materialize"], setup["data"].train
    prompts = [materialize(prompt_of(renderer, train[i])) for i in range(6)]
    assert len({len(p.token_ids) for p in prompts}) > 2 and 0 < sum(bool(p.pixel_kwargs) for p in prompts) < 6
    stops = renderer.stop_token_ids
    alone = [target.greedy_continuations([prompt], 12, stops)[0] for prompt in prompts]
    assert target.greedy_continuations(prompts, 12, stops) == alone
    assert target.greedy_continuations(prompts[1:4], 12, stops) == alone[1:4]
    assert all(1 <= len(a) <= 12 and not set(a[:-1]) & set(stops) for a in alone)
    stopped = [a for a in alone if a[-1] in stops]
    assert len(stopped) < len(alone) or all(len(a) < 12 for a in stopped)


def test_regeneration_answers_every_prompt_in_order_batch_by_batch(setup: dict[str, Any]) -> None:
    """A world of one answers all batches; the token lists survive the int64 wire form (tested with 2 ranks too)."""
    renderer, target, materialize, train = setup["renderer"], setup["target"], setup["materialize"], setup["data"].train
    prompts, stops = [prompt_of(renderer, train[i]) for i in range(7)], renderer.stop_token_ids
    assert generation_batches(7, 3) == [range(3), range(3, 6), range(6, 7)]
    one = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    answers = regenerate(prompts, materialize, target, 8, stops, 3, one)
    for batch in generation_batches(7, 3):
        alone = target.greedy_continuations([materialize(prompts[i]) for i in batch], 8, stops)
        assert answers[batch.start : batch.stop] == alone
    assert one.gather_token_lists([[5, 6], [], [7]]) == [[[5, 6], [], [7]]] and one.gather_token_lists([]) == [[]]
