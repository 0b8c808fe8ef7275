"""Per-family adapters: loaded processor + `[multimodal]` settings -> model kwargs; loaded model -> positions."""

from foveal.trainer.data.adapters.base import (
    Grid,
    ImageAdapter,
    PixelKwargs,
    PositionScheme,
    ProcessedImage,
    concat_pixel_kwargs,
)
from foveal.trainer.data.adapters.registry import ADAPTERS, POSITION_SCHEMES, AdapterFactory, image_adapter

__all__ = [
    "ADAPTERS",
    "POSITION_SCHEMES",
    "AdapterFactory",
    "Grid",
    "ImageAdapter",
    "PixelKwargs",
    "PositionScheme",
    "ProcessedImage",
    "concat_pixel_kwargs",
    "image_adapter",
]
