"""`qwen2_vl`: Qwen2-VL and Qwen2.5-VL (patch 14, merge 2); both processors share one layout family."""

from __future__ import annotations

from typing import Any

from foveal.configs.multimodal import MultimodalConfig
from foveal.trainer.data.adapters.qwen_vl import QwenVLAdapter, QwenVLFamily

QWEN2_VL = QwenVLFamily("qwen2_vl", frozenset({"Qwen2VLProcessor", "Qwen2_5_VLProcessor"}))


def qwen2_vl_adapter(processor: Any, config: MultimodalConfig) -> QwenVLAdapter:
    return QwenVLAdapter(QWEN2_VL, processor, config)
