"""foveal.renderers: chat messages and model-input chunks -> exact token ids, loss masks and image refs.

Names are resolved on first use (PEP 562), so `import foveal.renderers` stays cheap and never pulls in
transformers or torch; `from foveal.renderers import Renderer` imports only what that name needs.
"""

from foveal.configs.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "foveal.renderers.messages": (
        "AssistantMessage", "FunctionSpec", "ImagePart", "InvalidMessage", "Message", "SystemMessage", "TextPart",
        "ToolCall", "ToolCallError", "ToolMessage", "ToolSpec", "UserMessage", "parse_messages", "parse_tools",
    ),
    "foveal.renderers.rendering": ("LossOn", "Renderer"),
    "foveal.renderers.rendered": ("RenderedConversation", "RenderedImage"),
    "foveal.renderers.factory": ("build_renderer", "load_renderer"),
    "foveal.renderers.pretrained": ("FAMILY_NAMES",),
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
})  # fmt: skip
