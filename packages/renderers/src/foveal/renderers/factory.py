"""Build a Renderer from a run config's `[renderer]` and `[multimodal]` sections, or from a model name alone."""

from __future__ import annotations

from pathlib import Path

from foveal.configs.multimodal import MultimodalConfig
from foveal.configs.renderer import RendererConfig

from foveal.renderers.rendering import Renderer
from foveal.renderers.store import ImageStore

load_renderer = Renderer.from_pretrained
"""`Renderer.from_pretrained` as a plain function: the tokenizer loaded the way users do, the family chosen."""


def build_renderer(
    name_or_path: str | Path,
    config: RendererConfig,
    *,
    store: ImageStore | None = None,
    multimodal: MultimodalConfig | None = None,
) -> Renderer:
    """`load_renderer` with the `[renderer]` and `[multimodal]` sections of a run config."""
    return load_renderer(
        name_or_path,
        store=store,
        family=config.family,
        loss_on=config.loss_on,
        multimodal=multimodal,
        max_images=config.max_images_per_sample,
    )
