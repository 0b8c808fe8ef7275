"""The ChatML building blocks the Qwen templates share: turns, vision blocks, the tools preamble, tool calls.

Each family module composes these into its own template; the strings here are the literal text those Jinja
templates print, and the load-time self-check plus the parity tests compare them against the real template.
"""

from __future__ import annotations

from collections.abc import Sequence

from foveal.renderers.families.pieces import ImageSlot, Piece, Text, Token
from foveal.renderers.messages import Content, ImagePart, Message, TextPart, ToolCall, ToolSpec

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
STOP_TOKENS = (IM_END, END_OF_TEXT)

TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>"
)


class ChatWriter:
    """Collects the pieces of one render and the image parts in the order the template meets them."""

    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self.images: list[ImagePart] = []

    def text(self, text: str, message: int, trained: bool = False, content: bool = False) -> None:
        """Text of message `message`; `content` when the message wrote it (else the template did)."""
        self.pieces.append(Text(text, message, trained, content=content))

    def token(self, token: str, message: int, trained: bool = False, content: bool = False) -> None:
        self.pieces.append(Token(token, message, trained, content=content))

    def image(self, part: ImagePart, message: int) -> None:
        """`<|vision_start|>` + the placeholder run + `<|vision_end|>`, as every Qwen-VL template writes it."""
        self.token(VISION_START, message, content=True)
        self.pieces.append(ImageSlot(len(self.images), message))
        self.token(VISION_END, message, content=True)
        self.images.append(part)

    def content(self, content: Content, message: int, trained: bool = False) -> None:
        """Message content in order: text parts as text, image parts as vision blocks (all content pieces)."""
        if isinstance(content, str):
            self.text(content, message, trained, content=True)
            return
        for part in content:
            if isinstance(part, TextPart):
                self.text(part.text, message, trained, content=True)
            else:
                self.image(part, message)

    def open_turn(self, role: str, message: int) -> None:
        """`<|im_start|>{role}\\n`: never trained, it is the prompt the model continues from."""
        self.token(IM_START, message)
        self.text(f"{role}\n", message)

    def close_turn(self, message: int, trained: bool = False) -> None:
        """`<|im_end|>\\n`: the `<|im_end|>` is trained with its turn (the model must learn to stop)."""
        self.token(IM_END, message, trained)
        self.text("\n", message)

    def generation_prompt(self, message: int) -> None:
        """`<|im_start|>assistant\\n`: what a sampled completion continues."""
        self.open_turn("assistant", message)

    def system_turn(self, system: str | None, tools: Sequence[ToolSpec]) -> None:
        """The leading system turn of the Qwen3 templates: system text, then the tools preamble if any.

        Written by message 0 when it is the system message, else by no message (-1): the template adds it."""
        if tools:
            owner = 0 if system is not None else -1
            self.open_turn("system", owner)
            if system is not None:
                self.text(system, owner, content=True)
            self.text(("\n\n" if system is not None else "") + tools_preamble(tools), owner)
            self.close_turn(owner)
        elif system is not None:
            self.open_turn("system", 0)
            self.text(system, 0, content=True)
            self.close_turn(0)

    def tool_response(self, messages: Sequence[Message], index: int, media: bool) -> None:
        """A `<tool_response>` block; consecutive tool messages share one `<|im_start|>user` turn."""
        if index == 0 or messages[index - 1].role != "tool":
            self.token(IM_START, index)
            self.text("user", index)
        self.text("\n<tool_response>\n", index)
        message = messages[index]
        if media:
            self.content(message.content, index)
        else:
            self.text(message.text(), index, content=True)
        self.text("\n</tool_response>", index)
        if index == len(messages) - 1 or messages[index + 1].role != "tool":
            self.close_turn(index)


def tools_preamble(tools: Sequence[ToolSpec]) -> str:
    """The tools section of the system turn: one JSON line per tool inside `<tools>`."""
    return TOOLS_HEADER + "".join("\n" + tool.to_json() for tool in tools) + TOOLS_FOOTER


def tool_calls_text(calls: Sequence[ToolCall], after_content: bool) -> str:
    """Tool-call blocks; a `\\n` precedes each one except the first when the content before it is empty."""
    return "".join(("\n" if index or after_content else "") + tool_call_text(call) for index, call in enumerate(calls))


def tool_call_text(call: ToolCall) -> str:
    """`<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>` with arguments as `tojson` writes them."""
    return f'<tool_call>\n{{"name": "{call.name}", "arguments": {call.arguments_json()}}}\n</tool_call>'
