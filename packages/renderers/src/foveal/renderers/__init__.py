"""foveal.renderers: chat messages and model-input chunks -> exact token ids, loss masks and image refs.

Names are resolved on first use (PEP 562), so `import foveal.renderers` stays cheap and never pulls in
transformers or torch; `from foveal.renderers import Renderer` imports only what that name needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "foveal.renderers.messages": (
        "AssistantMessage", "FunctionSpec", "ImagePart", "InvalidMessage", "Message", "SystemMessage", "TextPart",
        "ToolCall", "ToolCallError", "ToolMessage", "ToolSpec", "UserMessage", "parse_messages", "parse_tools",
    ),
    "foveal.renderers.rendering": ("LossOn", "RenderedConversation", "RenderedImage", "Renderer"),
    "foveal.renderers.factory": ("FAMILY_NAMES", "build_renderer", "load_renderer"),
    "foveal.renderers.chunks": (
        "EncodedTextChunk", "ImageAssetPointerChunk", "ImageChunk", "ModelInput", "render_chunks", "to_model_input",
    ),
    "foveal.renderers.contract": ("RawImageDescriptor", "decode_mmraw", "encode_mmraw"),
    "foveal.renderers.store": ("ImageStore", "StoredImage"),
    "foveal.renderers.layout": ("ImageLayout", "LayoutSpec", "compute_layout", "spec_from_image_processor"),
    "foveal.renderers.errors": (
        "BadEnvelope", "BadRefEncoding", "ContractError", "DisallowedLocation", "FingerprintMismatch", "HashMismatch",
        "ImageRejected", "MissingAsset", "OverlongSample", "PlaceholderMismatch", "UnknownFamily",
    ),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'foveal.renderers' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
