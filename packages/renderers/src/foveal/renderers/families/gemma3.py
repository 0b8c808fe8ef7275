"""Gemma 3 (instruction-tuned, with vision): `<start_of_turn>` turns, the system text inside the first user turn.

What makes it different, all mirrored from its published template and Gemma3Processor:
- `<bos>` once, written by the template (the tokenizer's own BOS post-processor is never applied).
- Every turn is `<start_of_turn>{role}\\n{content}<end_of_turn>\\n` with the assistant role written `model`.
  String content is trimmed; in a list of parts each text part is trimmed on its own and each image prints
  `<start_of_image>`.
- A system message is not a turn: its text plus a blank line ("\\n\\n", the text itself untrimmed) is put in
  front of the first user message's content. With list content the template takes only the first part's
  text, so a system message must be a string or one text part.
- After the system message, roles must alternate user / model starting with user; the template raises
  otherwise. Later system messages would be printed as `system` turns in a model slot, tool messages as
  `tool` turns: neither is a Gemma 3 turn, so both are refused, and so are `tools`, `tool_calls` and
  `reasoning_content`, which it never prints.
- The processor replaces each `<start_of_image>` the template printed with "\\n\\n<start_of_image>" +
  `<image_soft_token>` x image_seq_length + "<end_of_image>\\n\\n" before tokenizing, so the blank lines
  around an image are tokenized together with the text beside them; here they are `expansion` pieces.
- The generation prompt is `<start_of_turn>model\\n`; a completion ends with `<end_of_turn>` (or `<eos>`).
"""

from __future__ import annotations

from collections.abc import Sequence

from foveal.renderers.families.base import FamilyAdapter, refuse
from foveal.renderers.families.chatml import ChatWriter
from foveal.renderers.families.completion import CompletionFormat
from foveal.renderers.families.pieces import ImageSlot, Text, Token
from foveal.renderers.messages import AssistantMessage, Content, ImagePart, Message, TextPart, ToolSpec

BOS, EOS = "<bos>", "<eos>"
START_OF_TURN, END_OF_TURN = "<start_of_turn>", "<end_of_turn>"
START_OF_IMAGE, END_OF_IMAGE, IMAGE_SOFT_TOKEN = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
IMAGE_SEPARATOR = "\n\n"
"""What Gemma3Processor writes before `<start_of_image>` and after `<end_of_image>`."""
SYSTEM_SEPARATOR = "\n\n"
"""What the template writes after the system text, in front of the first user message's content."""


class Gemma3Family(FamilyAdapter):
    name = "gemma3"
    layout_family = "gemma3"
    image_token = IMAGE_SOFT_TOKEN
    template_image_token = START_OF_IMAGE
    vision_markers = (START_OF_IMAGE, END_OF_IMAGE)
    reserved_tokens = (IMAGE_SOFT_TOKEN, START_OF_IMAGE, END_OF_IMAGE)
    stop_tokens = (END_OF_TURN, EOS)
    completion = CompletionFormat(reasoning=False, tool_calls=False)
    prefix_stable = True
    prefix_note = (
        "Each message is written once, in order, and the system text only ever joins the first user turn, so a "
        "longer conversation starts with the text of a shorter one. Content is trimmed, so re-tokenizing sampled "
        "text can differ from the sampled ids; `bridge` keeps them."
    )

    def check(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> None:
        if tools:
            raise refuse("tools", [t.function.name for t in tools], self.name, "it has no tool section")
        first = 1 if messages and messages[0].role == "system" else 0
        if first:
            _check_system(messages[0], self.name)
            if len(messages) == 1:
                raise refuse("messages", "<only a system message>", self.name, "the system text joins a user turn")
        for index in range(first, len(messages)):
            message = messages[index]
            field = f"messages[{index}]"
            if message.role in ("system", "tool"):
                raise refuse(f"{field}.role", message.role, self.name, "only user and model turns, system first")
            expected = "user" if (index - first) % 2 == 0 else "assistant"
            if message.role != expected:
                why = f"turns alternating user/model from the first user message; here {expected}"
                raise refuse(f"{field}.role", message.role, self.name, why)
            if isinstance(message, AssistantMessage):
                if message.tool_calls:
                    raise refuse(f"{field}.tool_calls", message.tool_calls, self.name, "no tool calls")
                if message.reasoning_content is not None:
                    raise refuse(f"{field}.reasoning_content", message.reasoning_content, self.name, "no reasoning")

    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        out = ChatWriter()
        out.token(BOS, -1)  # the template's own, whatever the messages
        first = 1 if messages[0].role == "system" else 0
        for index in range(first, len(messages)):
            message = messages[index]
            trained = message.role == "assistant"
            out.token(START_OF_TURN, index)
            out.text(("model" if trained else message.role) + "\n", index)
            if index == first == 1:
                out.text(messages[0].text(), 0, content=True)
                out.text(SYSTEM_SEPARATOR, 0)
            _content(out, message.content, index, trained)
            out.token(END_OF_TURN, index, trained)
            out.text("\n", index)
        if add_generation_prompt:
            out.token(START_OF_TURN, len(messages))
            out.text("model\n", len(messages))
        return out


def _check_system(message: Message, family: str) -> None:
    """The template reads a string, or only the text of the first part of a list."""
    content = message.content
    if isinstance(content, str):
        return
    if len(content) != 1 or not isinstance(content[0], TextPart):
        raise refuse("messages[0].content", "<parts>", family, "a system message that is a string or one text part")


def _content(out: ChatWriter, content: Content, message: int, trained: bool) -> None:
    """Trimmed text (each part on its own); an image as the processor's expansion of `<start_of_image>`."""
    if isinstance(content, str):
        out.text(content.strip(), message, trained, content=True)
        return
    for part in content:
        if isinstance(part, ImagePart):
            _image(out, part, message)
        else:
            out.text(part.text.strip(), message, trained, content=True)


def _image(out: ChatWriter, part: ImagePart, message: int) -> None:
    """The processor's expansion "\\n\\n<start_of_image>", placeholders, "<end_of_image>\\n\\n": never trained."""
    out.pieces.append(Text(IMAGE_SEPARATOR, message, expansion=True, content=True))
    out.pieces.append(Token(START_OF_IMAGE, message, expansion=True, content=True))
    out.pieces.append(ImageSlot(len(out.images), message))
    out.pieces.append(Token(END_OF_IMAGE, message, expansion=True, content=True))
    out.pieces.append(Text(IMAGE_SEPARATOR, message, expansion=True, content=True))
    out.images.append(part)
