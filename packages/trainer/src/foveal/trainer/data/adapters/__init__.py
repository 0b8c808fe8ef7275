"""Per-family image adapters: loaded processor + `[multimodal]` settings -> pixels and model kwargs."""

from foveal.trainer.data.adapters.base import Grid, ImageAdapter, ProcessedImage
from foveal.trainer.data.adapters.registry import ADAPTERS, AdapterFactory, image_adapter

__all__ = ["ADAPTERS", "AdapterFactory", "Grid", "ImageAdapter", "ProcessedImage", "image_adapter"]
