"""`glm4v`: GLM-4.1V, whose Glm4vImageProcessor cuts Qwen2-VL's patch grid (patch 14, merge 2, temporal 2).

Only its resize rule differs from Qwen2-VL's (`foveal.renderers.layout.glm4v`), and that lives in the layout
family the fingerprint names; the processed image has Qwen-VL's shape (`t*h*w` rows and a grid) and the model
takes `pixel_values` and `image_grid_thw`, so the Qwen-VL adapter serves it with GLM's processor class. The
placeholder is `<|image|>` (Glm4vProcessor's `image_token_id`); `mrope.py` numbers the tokens with the model's
own `get_rope_index`.
"""

from __future__ import annotations

from typing import Any

from foveal.configs.multimodal import MultimodalConfig
from foveal.trainer.data.adapters.qwen_vl import QwenVLAdapter, QwenVLFamily

GLM4V = QwenVLFamily("glm4v", frozenset({"Glm4vProcessor"}))


def glm4v_adapter(processor: Any, config: MultimodalConfig) -> QwenVLAdapter:
    return QwenVLAdapter(GLM4V, processor, config)
