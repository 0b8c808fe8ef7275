"""The vLLM backend serves only the image layouts whose prompt form it hands vLLM (the Qwen-VL ones); the other
families are refused before any engine starts, naming `inference.backend` and the backend that serves them."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("vllm")

from foveal.renderers.layout.gemma3 import Gemma3LayoutSpec
from foveal.renderers.layout.internvl import InternVLLayoutSpec
from foveal.renderers.layout.smolvlm import SmolVLMLayoutSpec
from foveal.renderers.layout.spec import LayoutSpec
from foveal.trainer.model.loading import ModelLoadError
from foveal.trainer.serving.backends.vllm.launch import engine_args
from foveal.trainer.serving.config import ServeConfig

QWEN = dict(patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=3136, max_pixels=12845056)


@pytest.mark.parametrize(
    "layout",
    [Gemma3LayoutSpec(family="gemma3", image_height=56, image_width=56, tokens_per_image=4),
     LayoutSpec(family="glm4v", **QWEN),
     InternVLLayoutSpec(family="internvl", tile_height=28, tile_width=28, min_tiles=1, max_tiles=12,
                        tokens_per_tile=4),
     SmolVLMLayoutSpec(family="smolvlm", longest_edge=128, tile_size=32, splitting=True,
                       tokens_per_tile=4)],  # fmt: skip
    ids=["gemma3", "glm4v", "internvl", "smolvlm"],
)
def test_layouts_vllm_is_not_given_in_its_form_are_refused_before_the_engine(layout: object, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as refused:
        engine_args(ServeConfig(), tmp_path, layout)  # type: ignore[arg-type]
    assert refused.value.field == "inference.backend" and refused.value.value == "vllm"
    assert f"not {layout.family}" in str(refused.value)  # type: ignore[attr-defined]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_the_qwen_vl_layouts_get_their_pixel_bounds(family: str, tmp_path: Path) -> None:
    args = engine_args(ServeConfig(), tmp_path, LayoutSpec(family=family, **QWEN))
    assert args.mm_processor_kwargs == {"size": {"shortest_edge": 3136, "longest_edge": 12845056}}
