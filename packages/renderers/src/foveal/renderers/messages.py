"""Typed chat messages: what a user hands a renderer and what `parse_completion` hands back.

Messages are validated once at the boundary, so the family adapters can walk them without re-checking
shapes. The dict forms HF chat templates accept (OpenAI `image_url` parts, `{"function": {...}}` tool calls)
are normalised here, and `template_dicts` turns typed messages back into the dicts a Jinja chat template
expects, so the generic family and the parity tests feed templates exactly what a user would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from foveal.renderers.contract import RawImageDescriptor, descriptor_from_obj
from foveal.renderers.errors import ContractError

_FROZEN = ConfigDict(extra="forbid", frozen=True)
RAW_IMAGE_KIND = "foveal.raw_image"


class InvalidMessage(ContractError):
    """A message the renderer cannot render faithfully: bad shape, or content its family's template drops."""

    http_status = 422


class TextPart(BaseModel):
    """A run of text inside a message."""

    model_config = _FROZEN
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """One image: PIL image, encoded bytes, `data:` URL, local path / `file://` URI, or a stored descriptor.

    The source is only checked for its kind here; decoding and the location rules belong to the store.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    type: Literal["image"] = "image"
    image: Any

    @field_validator("image")
    @classmethod
    def _known_source(cls, value: Any) -> Any:
        if isinstance(value, Image.Image | bytes | str | Path | RawImageDescriptor):
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        if isinstance(value, Mapping) and value.get("kind") == RAW_IMAGE_KIND:
            return descriptor_from_obj(dict(value))
        raise ValueError(f"unsupported image source of type {type(value).__name__}")


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
Content = str | tuple[ContentPart, ...]


def _normalise_parts(value: Any) -> Any:
    """Accept the HF/OpenAI spellings: `image_url` parts, `{"type": "image", "url"|"path": ...}`, and
    `content: null` (OpenAI's assistant turn that only calls tools), which templates print as nothing."""
    if value is None:
        return ""
    if isinstance(value, str) or not isinstance(value, Sequence):
        return value
    return [_normalise_part(part) for part in value]


def _normalise_part(part: Any) -> Any:
    if not isinstance(part, Mapping):
        return part
    if part.get("type") == "image_url":
        url = part.get("image_url")
        return {"type": "image", "image": url.get("url") if isinstance(url, Mapping) else url}
    if part.get("type") == "image" and "image" not in part:
        for key in ("url", "path"):
            if key in part:
                return {"type": "image", "image": part[key]}
    return part


class _MessageBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    content: Content = ""

    @field_validator("content", mode="before")
    @classmethod
    def _known_part_spellings(cls, value: Any) -> Any:
        return _normalise_parts(value)

    def images(self) -> tuple[ImagePart, ...]:
        """The image parts of this message, in order."""
        if isinstance(self.content, str):
            return ()
        return tuple(part for part in self.content if isinstance(part, ImagePart))

    def text(self) -> str:
        """The text of this message with images left out (what a text-only template writes)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))


class SystemMessage(_MessageBase):
    """Instructions that frame the conversation."""

    role: Literal["system"] = "system"


class UserMessage(_MessageBase):
    """A user turn: text and images."""

    role: Literal["user"] = "user"


class ToolCall(BaseModel):
    """A function call the assistant made: `arguments` is a JSON object, or the verbatim JSON text."""

    model_config = _FROZEN
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _unwrap_function(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and isinstance(value.get("function"), Mapping):
            return dict(value["function"])
        return value

    def arguments_json(self) -> str:
        """The arguments as a chat template writes them (`tojson`: no ASCII escaping, default separators)."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


class ToolCallError(BaseModel):
    """A `<tool_call>` block whose JSON could not be read; its text stays in the message content."""

    model_config = _FROZEN
    raw: str
    error: str


class AssistantMessage(_MessageBase):
    """An assistant turn: visible content, optional reasoning, optional tool calls."""

    role: Literal["assistant"] = "assistant"
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_errors: tuple[ToolCallError, ...] = Field(
        default=(), description="Set by parse_completion for malformed tool calls; never rendered."
    )


class ToolMessage(_MessageBase):
    """The result of a tool call, fed back to the model."""

    role: Literal["tool"] = "tool"
    tool_call_id: str | None = None
    name: str | None = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionSpec(BaseModel):
    """A JSON-schema function description; extra keys (e.g. `strict`) are kept and rendered after these."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(BaseModel):
    """A tool offered to the model, in the OpenAI `{"type": "function", "function": {...}}` shape."""

    model_config = _FROZEN
    type: Literal["function"] = "function"
    function: FunctionSpec

    def template_dict(self) -> dict[str, Any]:
        """The dict a chat template's `tool | tojson` sees: declared keys first, unset ones left out."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> str:
        """The tool as templates write it: `json.dumps(..., ensure_ascii=False)`, i.e. HF's `tojson`."""
        return json.dumps(self.template_dict(), ensure_ascii=False)


_MESSAGES = TypeAdapter(tuple[Message, ...])
_TOOLS = TypeAdapter(tuple[ToolSpec, ...])


def parse_messages(messages: Sequence[Any]) -> tuple[Message, ...]:
    """Validate messages (typed models or dicts) once, raising `InvalidMessage` that names the bad field."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidMessage("messages", messages, "a list of messages")
    try:
        return _MESSAGES.validate_python(tuple(messages))
    except ValidationError as err:
        raise _as_contract_error("messages", err) from err


def parse_tools(tools: Sequence[Any] | None) -> tuple[ToolSpec, ...]:
    """Validate tool specs, raising `InvalidMessage` that names the bad field."""
    if not tools:
        return ()
    try:
        return _TOOLS.validate_python(tuple(tools))
    except ValidationError as err:
        raise _as_contract_error("tools", err) from err


def _as_contract_error(root: str, err: ValidationError) -> InvalidMessage:
    first = max(err.errors(), key=lambda e: len(e["loc"]))  # the deepest error is the most specific
    return InvalidMessage(root + _field_path(first["loc"]), first.get("input"), first["msg"])


_TAGS = frozenset({"system", "user", "assistant", "tool", "text", "image"})


def _field_path(loc: tuple[int | str, ...]) -> str:
    """`(0, 'user', 'content', 'tuple[...]', 1, 'image', 'image')` -> `[0].content[1].image`: union tags dropped."""
    path, after_index = "", False
    for part in loc:
        is_tag = isinstance(part, str) and ((after_index and part in _TAGS) or part == "str" or "[" in part)
        if not is_tag:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        after_index = isinstance(part, int)
    return path


def template_dicts(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages as HF chat templates read them: images become `{"type": "image"}` parts."""
    return [_template_dict(message) for message in messages]


def _template_dict(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": _template_content(message.content)}
    if isinstance(message, AssistantMessage):
        if message.reasoning_content is not None:
            out["reasoning_content"] = message.reasoning_content
        if message.tool_calls:
            out["tool_calls"] = [
                {"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in message.tool_calls
            ]
    if isinstance(message, ToolMessage):
        out.update({k: v for k, v in (("tool_call_id", message.tool_call_id), ("name", message.name)) if v})
    return out


def _template_content(content: Content) -> str | list[dict[str, str]]:
    if isinstance(content, str):
        return content
    return [{"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"} for p in content]
