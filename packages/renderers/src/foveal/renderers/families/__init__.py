"""Chat families: one small adapter per chat template, plus the shared pieces -> tokens machinery."""

from foveal.renderers.families.base import FamilyAdapter
from foveal.renderers.families.gemma3 import Gemma3Family
from foveal.renderers.families.generic import GenericFamily
from foveal.renderers.families.glm4v import Glm4vFamily
from foveal.renderers.families.gpt_oss import GptOssFamily
from foveal.renderers.families.internvl import InternVLFamily
from foveal.renderers.families.llama3 import Llama3Family
from foveal.renderers.families.qwen2_vl import Qwen2VLFamily
from foveal.renderers.families.qwen3 import Qwen3Family
from foveal.renderers.families.qwen3_vl import Qwen3VLFamily
from foveal.renderers.families.qwen3_vl_thinking import Qwen3VLThinkingFamily
from foveal.renderers.families.reference import ReferenceRenderer
from foveal.renderers.families.smolvlm import SmolVLMFamily

__all__ = [
    "FamilyAdapter",
    "Gemma3Family",
    "GenericFamily",
    "Glm4vFamily",
    "GptOssFamily",
    "InternVLFamily",
    "Llama3Family",
    "Qwen2VLFamily",
    "Qwen3Family",
    "Qwen3VLFamily",
    "Qwen3VLThinkingFamily",
    "ReferenceRenderer",
    "SmolVLMFamily",
]
