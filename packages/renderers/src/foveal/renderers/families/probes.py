"""Probe conversations that tell chat templates apart, for family detection and the load-time self-check.

A hand-written family is only trusted for a tokenizer if it writes the same string as that tokenizer's
own template on these probes: system prompts (present and absent), images in user and tool turns, tools
and tool calls (also text-only after a system prompt, for the text families), reasoning, grouped tool
responses and generation prompts. Probes a family refuses (content its template would drop) are skipped
for it. The same probes measure whether a template keeps earlier turns unchanged when more follow
(`prefix_stable` of the generic family).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from foveal.renderers.messages import (
    AssistantMessage,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    ToolSpec,
    UserMessage,
)

_IMAGE = ImagePart(image=b"probe: never decoded")
_TOOL = ToolSpec.model_validate(
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
        },
    }
)


@dataclass(frozen=True)
class Probe:
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    add_generation_prompt: bool = True


PROBES: tuple[Probe, ...] = (
    Probe((UserMessage(content="Hi there"),)),
    Probe(
        (
            SystemMessage(content="Be brief."),
            UserMessage(content=(_IMAGE, TextPart(text="What is this?"))),
            AssistantMessage(content="A cat."),
            UserMessage(content=(TextPart(text="And this? "), _IMAGE)),
        )
    ),
    Probe(
        (
            UserMessage(content="Define cat."),
            AssistantMessage(content="", tool_calls=(ToolCall(name="lookup", arguments={"word": "cat"}),)),
            ToolMessage(content="a small feline"),
            ToolMessage(content=(_IMAGE,)),
        ),
        tools=(_TOOL,),
    ),
    Probe(
        (
            SystemMessage(content="Think first."),
            UserMessage(content="2+2?"),
            AssistantMessage(content="4", reasoning_content="Add them."),
            UserMessage(content="3+3?"),
            AssistantMessage(content="6", reasoning_content="Add again."),
        ),
        add_generation_prompt=False,
    ),
    Probe((UserMessage(content="Hello"), AssistantMessage(content="Hey!")), add_generation_prompt=False),
    Probe(
        (
            SystemMessage(content="Use the tool."),
            UserMessage(content="Define dog."),
            AssistantMessage(content="", tool_calls=(ToolCall(name="lookup", arguments={"word": "dog"}),)),
            ToolMessage(content="a loyal canine"),
            AssistantMessage(content="A loyal canine."),
            UserMessage(content="Thanks"),
        ),
        tools=(_TOOL,),
    ),
)


def first_mismatch(
    ours: Callable[[Probe], str | None], theirs: Callable[[Probe], str]
) -> tuple[Probe, str, str] | None:
    """The first probe where `ours` (None: refused, skipped) and `theirs` render different strings."""
    for probe in PROBES:
        mine = ours(probe)
        if mine is None:
            continue
        reference = theirs(probe)
        if mine != reference:
            return probe, mine, reference
    return None


def keeps_earlier_turns(render: Callable[[Probe], str]) -> bool:
    """Whether every probe's render without its last message is a prefix of the full render."""
    for probe in PROBES:
        for cut in range(1, len(probe.messages)):
            shorter = Probe(probe.messages[:cut], probe.tools, add_generation_prompt=False)
            whole = Probe(probe.messages, probe.tools, add_generation_prompt=False)
            if not render(whole).startswith(render(shorter)):
                return False
    return True
