"""`qwen3_vl`: Qwen3-VL (patch 16, merge 2), whose processor configures the same Qwen2-VL image processor."""

from __future__ import annotations

from typing import Any

from foveal.configs.multimodal import MultimodalConfig
from foveal.trainer.data.adapters.qwen_vl import QwenVLAdapter, QwenVLFamily

QWEN3_VL = QwenVLFamily("qwen3_vl", frozenset({"Qwen3VLProcessor"}))


def qwen3_vl_adapter(processor: Any, config: MultimodalConfig) -> QwenVLAdapter:
    return QwenVLAdapter(QWEN3_VL, processor, config)
