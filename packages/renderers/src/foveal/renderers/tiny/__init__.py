"""Tiny local tokenizers and processors (Qwen, Llama 3, Gemma 3 families) for tests and demos (no torch, no model hub).

`build_tiny_processor(family)` returns a cached folder loadable with `AutoTokenizer.from_pretrained` and the
PIL image processor; `foveal.trainer.tiny_models.build_tiny_model` adds random-weight models on top.
"""

from foveal.renderers.tiny.cache import DEFAULT_CACHE_ROOT, materialize, recipe_digest, source_digest
from foveal.renderers.tiny.chat_templates import TEMPLATE_NAMES, chat_template
from foveal.renderers.tiny.families import (
    FAMILIES,
    FAMILY_SPECS,
    QWEN_VL_FAMILIES,
    VLM_FAMILIES,
    FamilySpec,
    Gemma3VisionSpec,
    InternVLVisionSpec,
    SmolVLMVisionSpec,
    VisionSpec,
    family_spec,
)
from foveal.renderers.tiny.processor import build_tiny_processor, processor_recipe, write_processor_files
from foveal.renderers.tiny.token_ids import TinyTokenIds

__all__ = [
    "DEFAULT_CACHE_ROOT",
    "FAMILIES",
    "FAMILY_SPECS",
    "QWEN_VL_FAMILIES",
    "TEMPLATE_NAMES",
    "VLM_FAMILIES",
    "FamilySpec",
    "Gemma3VisionSpec",
    "InternVLVisionSpec",
    "SmolVLMVisionSpec",
    "TinyTokenIds",
    "VisionSpec",
    "build_tiny_processor",
    "chat_template",
    "family_spec",
    "materialize",
    "processor_recipe",
    "recipe_digest",
    "source_digest",
    "write_processor_files",
]
