"""The typed message models: the spellings users send are accepted, anything else is named precisely."""

from __future__ import annotations

import json

import pytest

from foveal.renderers.messages import (
    AssistantMessage,
    ImagePart,
    InvalidMessage,
    ToolCall,
    UserMessage,
    parse_messages,
    parse_tools,
    template_dicts,
)


def test_openai_and_hf_image_spellings_become_image_parts() -> None:
    (message,) = parse_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": "file:///tmp/a.png"},
                    {"type": "image", "url": "/tmp/b.png"},
                    {"type": "image", "path": "/tmp/c.png"},
                    {"type": "image", "image": bytearray(b"png")},
                    {"type": "text", "text": "four"},
                ],
            }
        ]
    )
    assert [part.image for part in message.images()] == [
        "data:image/png;base64,AAAA",
        "file:///tmp/a.png",
        "/tmp/b.png",
        "/tmp/c.png",
        b"png",
    ]
    assert message.text() == "four"


def test_tool_calls_accept_both_the_wrapped_and_the_flat_form() -> None:
    wrapped = {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
    (message,) = parse_messages([{"role": "assistant", "content": None, "tool_calls": [wrapped, {"name": "g"}]}])
    assert isinstance(message, AssistantMessage)
    assert message.content == ""
    assert message.tool_calls == (ToolCall(name="f", arguments={"x": 1}), ToolCall(name="g"))
    assert message.tool_calls[0].arguments_json() == json.dumps({"x": 1})


def test_template_dicts_are_what_a_chat_template_reads() -> None:
    messages = parse_messages(
        [
            UserMessage(content=(ImagePart(image=b"x"),)),
            {"role": "assistant", "content": "a", "reasoning_content": "r", "tool_calls": [{"name": "f"}]},
            {"role": "tool", "content": "out", "tool_call_id": "call_1"},
        ]
    )
    assert template_dicts(messages) == [
        {"role": "user", "content": [{"type": "image"}]},
        {
            "role": "assistant",
            "content": "a",
            "reasoning_content": "r",
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {}}}],
        },
        {"role": "tool", "content": "out", "tool_call_id": "call_1"},
    ]


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([{"role": "bot", "content": "x"}], "messages[0]"),
        ([{"role": "user", "content": [{"type": "image", "image": 3}]}], "messages[0].content[0].image"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"name": 3}]}], "messages[1].tool_calls[0].name"),
        ([{"role": "user", "content": "a", "extra": 1}], "messages[0].extra"),
        ("not a list", "messages"),
    ],
)
def test_invalid_messages_name_the_field(messages: object, field: str) -> None:
    with pytest.raises(InvalidMessage) as raised:
        parse_messages(messages)  # type: ignore[arg-type]
    assert raised.value.field == field


def test_tools_keep_their_json_schema_in_order() -> None:
    spec = {
        "type": "function",
        "function": {"name": "f", "description": "d", "parameters": {"b": 1, "a": 2}, "strict": True},
    }
    (tool,) = parse_tools([spec])
    assert tool.to_json() == json.dumps(spec, ensure_ascii=False)
    with pytest.raises(InvalidMessage) as raised:
        parse_tools([{"type": "function", "function": {"description": "no name"}}])
    assert raised.value.field == "tools[0].function.name"
