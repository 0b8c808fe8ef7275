"""What `Renderer.from_pretrained` loads for a tokenizer folder or hub name, the way users load the model.

The tokenizer comes from `AutoTokenizer.from_pretrained` and the image layout from the model's own image
processor (PIL backend), so a renderer sees exactly what a user's processor would. The family is chosen
by behaviour, not by name alone: the hand-written family whose pieces reproduce the tokenizer's chat
template on the probe conversations wins (hinted by `processor_class` / `model_type`), and a template
no hand-written family reproduces gets the `generic` family. An explicitly requested family that does
not reproduce the template is an error, never a silent mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from foveal.configs.multimodal import MultimodalConfig
from jinja2 import TemplateError

from foveal.renderers.errors import UnknownFamily
from foveal.renderers.families.base import FamilyAdapter
from foveal.renderers.families.gemma3 import Gemma3Family
from foveal.renderers.families.generic import GenericFamily
from foveal.renderers.families.glm4v import Glm4vFamily
from foveal.renderers.families.gpt_oss import GptOssFamily
from foveal.renderers.families.internvl import InternVLFamily
from foveal.renderers.families.image_refs import ImageResolver
from foveal.renderers.families.llama3 import Llama3Family
from foveal.renderers.families.probes import Probe, first_mismatch, keeps_earlier_turns
from foveal.renderers.families.qwen2_vl import Qwen2VLFamily
from foveal.renderers.families.qwen3 import Qwen3Family
from foveal.renderers.families.qwen3_vl import Qwen3VLFamily
from foveal.renderers.families.qwen3_vl_thinking import Qwen3VLThinkingFamily
from foveal.renderers.families.smolvlm import SmolVLMFamily
from foveal.renderers.layout import AnyLayoutSpec, spec_from_image_processor, with_pixel_bounds
from foveal.renderers.messages import InvalidMessage
from foveal.renderers.store import ImageStore

HAND_WRITTEN = (
    "qwen2_vl", "qwen3_vl", "qwen3_vl_thinking", "qwen3", "llama3", "gpt_oss", "gemma3", "glm4v", "internvl", "smolvlm",
)  # fmt: skip
FAMILY_NAMES = (*HAND_WRITTEN, "generic")
_HINTS = {
    "qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_vl", "Qwen2VLProcessor": "qwen2_vl",
    "Qwen2_5_VLProcessor": "qwen2_vl", "qwen3_vl": "qwen3_vl", "qwen3_vl_moe": "qwen3_vl",
    "Qwen3VLProcessor": "qwen3_vl", "qwen3": "qwen3", "qwen3_moe": "qwen3", "gemma3": "gemma3",
    "Gemma3Processor": "gemma3", "glm4v": "glm4v", "Glm4vProcessor": "glm4v",
    "internvl": "internvl", "InternVLProcessor": "internvl", "gpt_oss": "gpt_oss",
    "smolvlm": "smolvlm", "SmolVLMProcessor": "smolvlm",
}  # fmt: skip
TINY_PREFIX = "tiny:"


class Pretrained(NamedTuple):
    """The parts of a Renderer, returned as parts so that this module never imports `rendering`."""

    adapter: FamilyAdapter
    tokenizer: Any
    images: ImageResolver


def load_pretrained(
    name_or_path: str | Path,
    *,
    store: ImageStore | None = None,
    family: str | None = None,
    layout_spec: AnyLayoutSpec | None = None,
    multimodal: MultimodalConfig | None = None,
    enable_thinking: bool | None = None,
) -> Pretrained:
    """Tokenizer, family and image resolver for the model at `name_or_path` (folder, hub name, or `tiny:<family>`)."""
    source = _resolve_source(name_or_path)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    adapter = _choose_family(tokenizer, source, family, enable_thinking)
    if adapter.layout_family is not None and layout_spec is None:
        layout_spec = _layout_spec(source, adapter.layout_family)
    if layout_spec is not None and multimodal is not None:
        layout_spec = with_pixel_bounds(layout_spec, multimodal.min_pixels, multimodal.max_pixels)
    return Pretrained(adapter, tokenizer, ImageResolver(store, layout_spec))


def _resolve_source(name_or_path: str | Path) -> str:
    """`tiny:<family>` builds (once) the local tiny processor folder; anything else is passed through."""
    text = str(name_or_path)
    if text.startswith(TINY_PREFIX):
        from foveal.renderers.tiny import build_tiny_processor

        return str(build_tiny_processor(text[len(TINY_PREFIX) :]))
    return text


def _choose_family(tokenizer: Any, source: str, family: str | None, enable_thinking: bool | None) -> FamilyAdapter:
    """Explicit family (verified against the template), else the first hand-written one that matches."""
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if family == "generic":
        return _generic(tokenizer, source)
    if family is not None:
        adapter = _hand_written(family, enable_thinking)
        mismatch = _mismatch(adapter, tokenizer) if has_template else None
        if mismatch is not None:
            raise UnknownFamily("family", family, f"a family whose template matches this tokenizer's ({mismatch})")
        return adapter
    hinted = _hint(source)
    if not has_template:
        if hinted is None:
            raise UnknownFamily("chat_template", None, "a tokenizer with a chat template, or an explicit family")
        return _hand_written(hinted, enable_thinking)
    for name in sorted(HAND_WRITTEN, key=lambda n: n != hinted):
        adapter = _hand_written(name, enable_thinking)
        if _mismatch(adapter, tokenizer) is None:
            return adapter
    return _generic(tokenizer, source)


def _hand_written(name: str, enable_thinking: bool | None) -> FamilyAdapter:
    if name == "qwen2_vl":
        return Qwen2VLFamily()
    if name == "qwen3_vl":
        return Qwen3VLFamily()
    if name == "qwen3_vl_thinking":
        return Qwen3VLThinkingFamily()
    if name == "qwen3":
        return Qwen3Family(enable_thinking=enable_thinking)
    if name == "llama3":
        return Llama3Family()
    if name == "gpt_oss":
        return GptOssFamily()
    if name == "gemma3":
        return Gemma3Family()
    if name == "glm4v":
        return Glm4vFamily()
    if name == "internvl":
        return InternVLFamily()
    if name == "smolvlm":
        return SmolVLMFamily()
    raise UnknownFamily("family", name, f"one of {list(FAMILY_NAMES)}")


def _mismatch(adapter: FamilyAdapter, tokenizer: Any) -> str | None:
    """Where the adapter and the tokenizer's template disagree on the probes; None when they agree."""

    def ours(probe: Probe) -> str | None:
        try:
            adapter.check(probe.messages, probe.tools)
        except InvalidMessage:
            return None
        writer = adapter.write(probe.messages, probe.tools, probe.add_generation_prompt)
        return adapter.template_text(writer.pieces)

    def theirs(probe: Probe) -> str:
        return _template_string(tokenizer, adapter, probe) or ""

    found = first_mismatch(ours, theirs)
    return None if found is None else f"probe {found[0].messages[-1].role!r} turn: {found[1]!r} != {found[2]!r}"


def _template_string(tokenizer: Any, adapter: FamilyAdapter, probe: Probe) -> str | None:
    """The tokenizer's own template on a probe; None if the template itself refuses it."""
    try:
        return tokenizer.apply_chat_template(
            adapter.template_messages(probe.messages),
            tools=[tool.template_dict() for tool in probe.tools] or None,
            add_generation_prompt=probe.add_generation_prompt,
            tokenize=False,
            **adapter.template_kwargs(),
        )
    except TemplateError:
        return None


def _generic(tokenizer: Any, source: str) -> GenericFamily:
    added = {t.content for t in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()}
    image_token = getattr(tokenizer, "image_token", None) or ("<|image_pad|>" if "<|image_pad|>" in added else None)
    layout = _hint(source) if _hint(source) in ("qwen2_vl", "qwen3_vl") else None
    stops = tuple(t for t in (tokenizer.eos_token, "<|im_end|>", "<|endoftext|>") if t and t in added)
    probe_adapter = GenericFamily(
        tokenizer, layout_family=layout, image_token=image_token, stop_tokens=stops, prefix_stable=False
    )

    def render(probe: Probe) -> str:
        try:
            return probe_adapter.render_text(probe.messages, probe.tools, probe.add_generation_prompt)
        except TemplateError:
            return ""

    stable = keeps_earlier_turns(render)
    return GenericFamily(
        tokenizer, layout_family=layout, image_token=image_token, stop_tokens=stops, prefix_stable=stable
    )


def _hint(source: str) -> str | None:
    """The family named by the model's config.json `model_type` or its `processor_class`, if any."""
    for filename, key in (("config.json", "model_type"), ("preprocessor_config.json", "processor_class"),
                          ("tokenizer_config.json", "processor_class")):  # fmt: skip
        value = _read_json(source, filename).get(key)
        if value in _HINTS:
            return _HINTS[value]
    return None


def _read_json(source: str, filename: str) -> dict[str, Any]:
    from transformers.utils import cached_file

    path = cached_file(
        source,
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,  # a hint, not a requirement: offline hub names work
    )
    return json.loads(Path(path).read_text(encoding="utf-8")) if path else {}


def _layout_spec(source: str, layout_family: str) -> AnyLayoutSpec:
    """Layout settings read from the model's own image processor (PIL backend: no torchvision needed), plus
    its processor_config.json, which holds what the full processor owns (Gemma 3's `image_seq_length`)."""
    from transformers import AutoImageProcessor

    image_processor = AutoImageProcessor.from_pretrained(source, backend="pil")
    return spec_from_image_processor(image_processor, layout_family, _read_json(source, "processor_config.json"))
