"""gpt-oss (OpenAI gpt-oss-20b / 120b), text: the harmony format as its published chat template writes it.

What makes it different, all mirrored from its template:
- Every message is `<|start|>{header}<|message|>{body}` closed by `<|end|>`, with nothing between messages and no
  BOS. A system message is always first, written by the template itself (no message owns it): the model identity,
  `Knowledge cutoff: 2024-06`, `Current date:` (the template's `strftime_now`, pinned per family instance, see
  `template_kwargs`), `Reasoning: {effort}` and the valid channels, plus a line sending calls to `functions` when
  tools are given.
- A leading system message becomes the developer message (`# Instructions`), which also holds the tools as a
  TypeScript `namespace functions { ... }`; without instructions or tools there is no developer message. A system
  message anywhere else is never printed, so it is refused.
- An assistant answer is `<|start|>assistant<|channel|>final<|message|>{content}<|end|>`; the last message of a
  render without a generation prompt ends in `<|return|>` instead, and only it shows its reasoning, as an analysis
  message before the answer. A tool call (one per message; the template reads only the first) is
  `<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>{arguments | tojson}<|call|>`, after
  an analysis message holding the turn's content or its reasoning (not both), which is dropped once a later
  assistant answer follows. So the template is not prefix-stable.
- Tool results are `<|start|>functions.NAME to=assistant<|channel|>commentary<|message|>{content | tojson}<|end|>`,
  NAME being the latest call's function: a tool message with no call before it (since the last answer) is refused.
- The generation prompt is `<|start|>assistant`; everything after it in an assistant message is what the model
  samples (trained), up to and including the last closing token.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

from foveal.renderers.families.base import TextFamilyAdapter, refuse, refuse_images
from foveal.renderers.families.chatml import ChatWriter
from foveal.renderers.families.completion import CompletionFormat
from foveal.renderers.families.harmony import CALL, CHANNEL, END, MESSAGE, RETURN, START
from foveal.renderers.messages import AssistantMessage, Message, ToolSpec

END_OF_TEXT = "<|endoftext|>"
DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
DEFAULT_EFFORT = "medium"
KNOWLEDGE_CUTOFF = "2024-06"
CHANNELS_LINE = "# Valid channels: analysis, commentary, final. Channel must be included for every message."
TOOLS_CHANNEL_LINE = "\nCalls to these tools must go to the commentary channel: 'functions'."
_CHANNEL_TAGS = (f"{CHANNEL}analysis{MESSAGE}", f"{CHANNEL}final{MESSAGE}")


class GptOssFamily(TextFamilyAdapter):
    name = "gpt_oss"
    layout_family = None
    completion = CompletionFormat(reasoning=True, tool_calls=True, tool_call_style="harmony")
    prefix_stable = False
    prefix_note = (
        "Only the last assistant message of a render without a generation prompt shows its reasoning and ends in "
        "<|return|>; earlier answers end in <|end|> without it, and a tool call's analysis is dropped once a later "
        "answer follows, so rendering a longer conversation rewrites earlier turns. Calls are written in the "
        "template's header order (` to=functions.NAME<|channel|>commentary json`), not the model's own "
        "(`<|channel|>commentary to=functions.NAME <|constrain|>json`). `Renderer.bridge` keeps sampled tokens."
    )
    image_token = ""
    stop_tokens = (RETURN, CALL, END_OF_TEXT)
    closing_tokens = (END,)
    reserved_tokens = ()

    def __init__(
        self,
        current_date: datetime.date | None = None,
        reasoning_effort: str | None = None,
        model_identity: str | None = None,
    ) -> None:
        """`current_date` is what the template's `strftime_now` reads (None: today, fixed when the family is made);
        `reasoning_effort` and `model_identity` are the template variables of those names (None: its defaults)."""
        self.current_date = current_date or datetime.date.today()
        self.reasoning_effort = reasoning_effort
        self.model_identity = model_identity

    def template_kwargs(self) -> dict[str, Any]:
        """The template's variables, and its clock pinned to `current_date` (a render variable shadows the global
        `strftime_now`), so the template and this family write the same date on any day."""
        kwargs: dict[str, Any] = {"strftime_now": self.current_date.strftime}
        if self.reasoning_effort is not None:
            kwargs["reasoning_effort"] = self.reasoning_effort
        if self.model_identity is not None:
            kwargs["model_identity"] = self.model_identity
        return kwargs

    def template_messages(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """The template reads reasoning from `thinking`."""
        dicts = super().template_messages(messages)
        for out in dicts:
            if "reasoning_content" in out:
                out["thinking"] = out.pop("reasoning_content")
        return dicts

    def check(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> None:
        refuse_images(messages, self.name, frozenset(), "text only")
        function: str | None = None
        for index, message in enumerate(messages):
            if message.role == "system" and index > 0:
                raise refuse(f"messages[{index}].role", "system", self.name, "only a leading system message")
            if isinstance(message, AssistantMessage):
                _check_assistant(message, index, self.name)
                function = message.tool_calls[0].name if message.tool_calls else None
            elif message.role == "tool":
                if function is None:
                    raise refuse(f"messages[{index}].role", "tool", self.name, "a tool result after a tool call")
                name = getattr(message, "name", None)
                if name is not None and name != function:
                    raise refuse(f"messages[{index}].name", name, self.name, f"results named by the call ({function})")
        tool_namespace(tools, self.name)

    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        out = ChatWriter()
        _header(out, "system", -1)
        out.text(self.system_text(bool(tools)), -1)
        out.token(END, -1)
        leading = messages[0].role == "system"
        instructions = messages[0].text() if leading else ""
        if instructions or tools:
            owner = 0 if leading else -1
            _header(out, "developer", owner)
            if instructions:
                out.text("# Instructions\n\n", owner)
                out.text(instructions, owner, content=True)
                out.text("\n\n", owner)
            if tools:
                out.text("# Tools\n\n" + tool_namespace(tools, self.name), owner)
            out.token(END, owner)
        function = ""
        for index in range(1 if leading else 0, len(messages)):
            message = messages[index]
            if isinstance(message, AssistantMessage):
                last = index == len(messages) - 1 and not add_generation_prompt
                _write_assistant(out, messages, index, last)
                function = message.tool_calls[0].name if message.tool_calls else function
            elif message.role == "tool":
                _header(out, f"functions.{function} to=assistant", index, channel="commentary")
                out.text(json.dumps(message.text(), ensure_ascii=False), index, content=True)
                out.token(END, index)
            else:
                _header(out, "user", index)
                out.text(message.text(), index, content=True)
                out.token(END, index)
        if add_generation_prompt:
            out.token(START, len(messages))
            out.text("assistant", len(messages))
        return out

    def system_text(self, tools: bool) -> str:
        """The body of the system message the template writes first."""
        identity = DEFAULT_IDENTITY if self.model_identity is None else self.model_identity
        effort = DEFAULT_EFFORT if self.reasoning_effort is None else self.reasoning_effort
        date = self.current_date.strftime("%Y-%m-%d")
        head = f"{identity}\nKnowledge cutoff: {KNOWLEDGE_CUTOFF}\nCurrent date: {date}\n\nReasoning: {effort}\n\n"
        return head + CHANNELS_LINE + (TOOLS_CHANNEL_LINE if tools else "")


def _check_assistant(message: AssistantMessage, index: int, family: str) -> None:
    content, reasoning = message.text(), message.reasoning_content
    for field, text in ((f"messages[{index}].content", content), (f"messages[{index}].reasoning_content", reasoning)):
        if text is not None and any(tag in text for tag in _CHANNEL_TAGS):
            raise refuse(field, text, family, "channels are written by the template, not by message text")
    if len(message.tool_calls) > 1:
        raise refuse(f"messages[{index}].tool_calls", message.tool_calls, family, "one tool call per message")
    if message.tool_calls and content and reasoning:
        why = "a tool call's analysis is its content or its reasoning, not both"
        raise refuse(f"messages[{index}].reasoning_content", reasoning, family, why)


def _header(out: ChatWriter, role: str, message: int, channel: str | None = None) -> None:
    """`<|start|>{role}[<|channel|>{channel}]<|message|>`, all template."""
    out.token(START, message)
    out.text(role, message)
    if channel is not None:
        out.token(CHANNEL, message)
        out.text(channel, message)
    out.token(MESSAGE, message)


def _write_assistant(out: ChatWriter, messages: Sequence[Message], index: int, last: bool) -> None:
    """The harmony messages of one assistant turn. Its first `<|start|>assistant` is the generation prompt (neither
    trained nor content); the rest is what the model samples: trained and content, but the closing token."""
    message = messages[index]
    assert isinstance(message, AssistantMessage)
    parts: list[tuple[str, str, str, str]] = []  # (recipient header, channel, body, closer)
    if message.tool_calls:
        later_answer = any(isinstance(m, AssistantMessage) and not m.tool_calls for m in messages[index + 1 :])
        analysis = message.text() or message.reasoning_content
        if analysis and not later_answer:
            parts.append(("", "analysis", analysis, END))
        call = message.tool_calls[0]
        arguments = json.dumps(call.arguments, ensure_ascii=False)
        parts.append((f" to=functions.{call.name}", "commentary json", arguments, CALL))
    else:
        if last and message.reasoning_content is not None:
            parts.append(("", "analysis", message.reasoning_content, END))
        parts.append(("", "final", message.text(), RETURN if last else END))
    for number, (recipient, channel, body, closer) in enumerate(parts):
        sampled = number > 0  # the first header's <|start|>assistant is the prompt
        out.token(START, index, trained=sampled, content=sampled)
        out.text("assistant", index, trained=sampled, content=sampled)
        if recipient:
            out.text(recipient, index, trained=True, content=True)
        out.token(CHANNEL, index, trained=True, content=True)
        out.text(channel, index, trained=True, content=True)
        out.token(MESSAGE, index, trained=True, content=True)
        out.text(body, index, trained=True, content=True)
        final = number == len(parts) - 1
        out.token(closer, index, trained=True, content=not final)


def tool_namespace(tools: Sequence[ToolSpec], family: str) -> str:
    """The developer message's `## functions` section: each tool as a TypeScript type, as the template writes it;
    what the template cannot write (a missing description, nested object parameters, oneOf) is refused."""
    out = "## functions\n\nnamespace functions {\n\n"
    for number, tool in enumerate(tools):
        where = f"tools[{number}].function"
        function = tool.function
        if not isinstance(function.description, str):
            raise refuse(f"{where}.description", function.description, family, "every tool has a description")
        out += f"// {function.description}\ntype {function.name} = "
        parameters = function.parameters or {}
        properties = parameters.get("properties")
        if not properties:
            out += "() => any;\n\n"
            continue
        if not isinstance(properties, dict):
            raise refuse(f"{where}.parameters.properties", properties, family, "properties as an object")
        required = parameters.get("required") or []
        out += "(_: {\n"
        for name, spec in properties.items():
            field = f"{where}.parameters.properties.{name}"
            if not isinstance(spec, dict):
                raise refuse(field, spec, family, "a JSON schema object")
            description = spec.get("description")
            if description and not isinstance(description, str):
                raise refuse(f"{field}.description", description, family, "a string")
            out += f"// {description}\n" if description else ""
            out += name + ("" if name in required else "?") + ": " + ts_type(spec, field, family)
            if "default" in spec:
                default = spec["default"]
                if spec.get("enum") and not isinstance(default, str):
                    raise refuse(f"{field}.default", default, family, "an enum's default as a string")
                out += ", // default: " + (default if spec.get("enum") else json.dumps(default, ensure_ascii=False))
            out += ",\n"
        out += "}) => any;\n\n"
    return out + "} // namespace functions"


def ts_type(spec: dict[str, Any], field: str, family: str) -> str:
    """A parameter's TypeScript type as the template's macro writes it (arrays of scalars, unions of type names,
    string enums, `| null` for nullable strings and arrays, object, any)."""
    kind = spec.get("type")
    if kind == "array":
        items = spec.get("items")
        if "items" not in spec:
            text = "any[]"
        elif not isinstance(items, dict):
            raise refuse(f"{field}.items", items, family, "a JSON schema object")
        elif items.get("type") in ("string", "boolean"):
            text = f"{items['type']}[]"
        elif items.get("type") in ("number", "integer"):
            text = "number[]"
        else:
            inner = ts_type(items, f"{field}.items", family)
            text = "any[]" if inner == "object | object" or len(inner) > 50 else inner + "[]"
        return text + (" | null" if spec.get("nullable") else "")
    if isinstance(kind, list) and kind:
        return " | ".join(str(name) for name in kind)
    if spec.get("oneOf"):
        raise refuse(f"{field}.oneOf", spec["oneOf"], family, "no oneOf (its rendering is not reproduced)")
    if kind == "string" and spec.get("enum"):
        return '"' + '" | "'.join(str(value) for value in spec["enum"]) + '"'
    if kind == "string":
        return "string" + (" | null" if spec.get("nullable") else "")
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "object" and spec.get("properties"):
        why = "no nested object properties (its rendering is not reproduced)"
        raise refuse(f"{field}.properties", spec["properties"], family, why)
    return "object" if kind == "object" else "any"
