"""GLM-4.1V (e.g. GLM-4.1V-9B-Thinking): `[gMASK]<sop>`, role tokens, no end-of-turn token, inline image blocks.

What makes it different, all mirrored from its published chat template and Glm4vProcessor:
- The template starts with `[gMASK]<sop>` (two added tokens), whatever the messages.
- A turn is a role token, then `\\n`, then the content: `<|system|>\\n{text}`, `<|user|>\\n{content}`,
  `<|assistant|>\\n{text}`. Nothing closes a turn: the next role token follows the content directly, and the
  model stops by writing `<|user|>` (or `<|observation|>`, `<|endoftext|>`: the released generation config's
  eos ids). So an assistant turn's trained tokens are its content only.
- User content: text parts as they are, each image as `<|begin_of_image|><|image|><|end_of_image|>`, which
  Glm4vProcessor expands to `<|image|>` x num_placeholder_tokens. System and assistant content is printed
  as `{{ msg.content }}`, so list content would print Python's repr of the parts: here their text parts are
  joined into one string (what the template prints for that string), and images there are refused.
- Reasoning: the published template has no `<think>` logic at all. An assistant message's content is printed
  verbatim, earlier turns included (nothing is dropped), so the Thinking model's `<think>R</think>` must be in
  the content. `reasoning_content` R is therefore written as `<think>R</think>` in front of the content (and
  given to the template that way), which is exactly what the model samples; completions are split back the
  same way (`reasoning_split="verbatim"`), so parse and render round-trip.
- Roles in any order. Tool messages (no branch in the template: it drops them), `tools` and `tool_calls`
  (never printed) are refused. The generation prompt is `<|assistant|>\\n`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from foveal.renderers.families.base import FamilyAdapter, refuse, refuse_images
from foveal.renderers.families.chatml import ChatWriter
from foveal.renderers.families.completion import THINK_CLOSE, THINK_OPEN, CompletionFormat
from foveal.renderers.families.pieces import ImageSlot
from foveal.renderers.messages import AssistantMessage, Message, ToolSpec, template_dicts

GMASK, SOP = "[gMASK]", "<sop>"
SYSTEM, USER, ASSISTANT, OBSERVATION = "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"
END_OF_TEXT = "<|endoftext|>"
BEGIN_OF_IMAGE, END_OF_IMAGE, IMAGE = "<|begin_of_image|>", "<|end_of_image|>", "<|image|>"
BEGIN_OF_VIDEO, END_OF_VIDEO, VIDEO = "<|begin_of_video|>", "<|end_of_video|>", "<|video|>"
_ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}


class Glm4vFamily(FamilyAdapter):
    name = "glm4v"
    layout_family = "glm4v"
    image_token = IMAGE
    vision_markers = (BEGIN_OF_IMAGE, END_OF_IMAGE)
    reserved_tokens = (IMAGE, VIDEO, BEGIN_OF_IMAGE, END_OF_IMAGE, BEGIN_OF_VIDEO, END_OF_VIDEO)
    stop_tokens = (END_OF_TEXT, USER, OBSERVATION)
    completion = CompletionFormat(reasoning=True, tool_calls=False, reasoning_split="verbatim")
    prefix_stable = True
    prefix_note = (
        "Each message is written once, in order, with no end-of-turn token and nothing rewritten later (earlier "
        "turns keep their <think> blocks), so a longer conversation starts with the text of a shorter one. "
        "Re-tokenizing sampled text can still differ from the sampled ids; `bridge` keeps them."
    )

    def check(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> None:
        if tools:
            raise refuse("tools", [t.function.name for t in tools], self.name, "it has no tool section")
        refuse_images(messages, self.name, frozenset({"user"}))
        for index, message in enumerate(messages):
            if message.role not in _ROLE_TOKENS:
                raise refuse(f"messages[{index}].role", message.role, self.name, "only system, user and assistant")
            if isinstance(message, AssistantMessage):
                if message.tool_calls:
                    raise refuse(f"messages[{index}].tool_calls", message.tool_calls, self.name, "no tool calls")
                reasoning = message.reasoning_content
                if reasoning is not None and THINK_CLOSE in reasoning:
                    why = "reasoning written inside one <think> block"
                    raise refuse(f"messages[{index}].reasoning_content", reasoning, self.name, why)

    def template_messages(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        dicts = template_dicts(messages)
        for message, out in zip(messages, dicts, strict=True):
            if message.role != "user":
                out["content"] = _visible_text(message)
                out.pop("reasoning_content", None)
        return dicts

    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        out = ChatWriter()
        out.token(GMASK, -1)  # the template's own prefix, whatever the messages
        out.token(SOP, -1)
        for index, message in enumerate(messages):
            trained = message.role == "assistant"
            out.token(_ROLE_TOKENS[message.role], index)
            out.text("\n", index)
            if message.role == "user":
                _user_content(out, message, index)
            else:
                out.text(_visible_text(message), index, trained, content=True)
        if add_generation_prompt:
            out.token(ASSISTANT, len(messages))
            out.text("\n", len(messages))
        return out


def _visible_text(message: Message) -> str:
    """System / assistant text as the template prints it; reasoning as the `<think>` block it samples."""
    text = message.text()
    if isinstance(message, AssistantMessage) and message.reasoning_content is not None:
        return f"{THINK_OPEN}{message.reasoning_content}{THINK_CLOSE}{text}"
    return text


def _user_content(out: ChatWriter, message: Message, index: int) -> None:
    if isinstance(message.content, str):
        out.text(message.content, index, content=True)
        return
    for part in message.content:
        if part.type == "image":
            out.token(BEGIN_OF_IMAGE, index, content=True)
            out.pieces.append(ImageSlot(len(out.images), index))
            out.token(END_OF_IMAGE, index, content=True)
            out.images.append(part)
        else:
            out.text(part.text, index, content=True)
