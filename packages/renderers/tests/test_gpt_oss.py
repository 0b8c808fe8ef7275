"""gpt-oss (harmony format): token parity with the tiny template on 300 conversations, the template's behaviour
written out by hand, detection, typed refusals, completions parsed back by channel, content masks, and bridging
after the harmony closers.

The parity conversations cover a system message (as developer instructions, empty too), tools with every parameter
form the family writes (string enums, defaults, nullable, arrays, integers, booleans, type lists, no parameters),
one tool call per call message (object or JSON-text arguments, analysis from content or reasoning), runs of tool
results, answers with reasoning, several turns, generation prompts and every loss mode. The expected ids come only
from the tiny tokenizer's own Jinja template (apply_chat_template), the expected loss mask only from its string.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foveal.renderers.errors import UnknownFamily
from foveal.renderers.families.gpt_oss import GptOssFamily
from foveal.renderers.families.image_refs import ImageResolver
from foveal.renderers.families.reference import ReferenceRenderer
from foveal.renderers.messages import InvalidMessage
from foveal.renderers.rendering import Renderer
from foveal.renderers.tiny import build_tiny_processor

import rendering_fixtures as rf

SOURCE = "gpt_oss"
LOSS_MODES = ("assistant", "assistant", "last_assistant", "all")


def tool(name: str, properties: dict[str, Any] | None, required: tuple[str, ...] = ()) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties, "required": list(required)} if properties else None
    function = {"name": name, "description": f"{name.replace('_', ' ')} — ünïcode ok"}
    return {"type": "function", "function": {**function, **({"parameters": parameters} if parameters else {})}}


TOOLS = (
    tool("lookup", {"q": {"type": "string", "description": "What to look up."}}, ("q",)),
    tool(
        "get_weather",
        {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            "days": {"type": "integer", "default": 3, "description": "How many days."},
            "note": {"type": "string", "nullable": True},
        },
        ("city",),
    ),
    tool(
        "search_web",
        {
            "terms": {"type": "array", "items": {"type": "string"}},
            "weights": {"type": "array", "items": {"type": "number"}, "nullable": True},
            "strict": {"type": "boolean", "default": False},
            "either": {"type": ["string", "number"]},
            "options": {"type": "object"},
            "rows": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            "anything": {"description": "No type at all."},
        },
        ("terms",),
    ),
    tool("now", None),
)
TOOL_NAMES = tuple(t["function"]["name"] for t in TOOLS)
TEXT_PART = st.builds(lambda text: {"type": "text", "text": text}, rf.TEXTS)
TEXT_CONTENT = st.one_of(rf.TEXTS, st.lists(TEXT_PART, max_size=3))
_VALUES = st.one_of(st.integers(-5, 10**6), st.booleans(), st.none(), rf.TEXTS, st.lists(st.integers(), max_size=3))
_ARGUMENTS = st.dictionaries(st.sampled_from(("q", "city", "n", "ünï")), _VALUES, max_size=3)
_CALL = st.builds(
    lambda n, a: {"name": n, "arguments": a},
    st.sampled_from(TOOL_NAMES),
    st.one_of(_ARGUMENTS, _ARGUMENTS, st.just('{"q": "verbatim"}')),
)
ONE_CALL = st.one_of(_CALL, _CALL.map(lambda c: {"type": "function", "function": c}))
TOOL_LISTS = st.one_of(st.none(), st.lists(st.sampled_from(TOOLS), min_size=1, max_size=3, unique_by=str))


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], Any, bool, str]:
    """An optional leading system message, user turns each followed by 0-2 assistant messages: answers (with
    reasoning or not) or one tool call (its analysis from content, from reasoning, or none) and 0-2 results."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(TEXT_CONTENT)})
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(TEXT_CONTENT)})
        for _ in range(draw(st.integers(0, 2))):
            if draw(st.booleans()):
                answer: dict[str, Any] = {"role": "assistant", "content": draw(TEXT_CONTENT)}
                if draw(st.booleans()):
                    answer["reasoning_content"] = draw(rf.TEXTS)
                messages.append(answer)
                continue
            call: dict[str, Any] = {"role": "assistant", "content": draw(st.sampled_from(("", None))),
                                    "tool_calls": [draw(ONE_CALL)]}  # fmt: skip
            analysis = draw(st.sampled_from(("none", "content", "reasoning")))
            if analysis == "content":
                call["content"] = draw(rf.TEXTS)
            elif analysis == "reasoning":
                call["reasoning_content"] = draw(rf.TEXTS)
            messages.append(call)
            for _ in range(draw(st.integers(0, 2))):
                messages.append({"role": "tool", "content": draw(TEXT_CONTENT)})
    return messages, draw(TOOL_LISTS), draw(st.booleans()), draw(st.sampled_from(LOSS_MODES))


CLOSER = re.compile(r"<\|end\|>|<\|return\|>|<\|call\|>")


def assistant_spans(text: str) -> list[tuple[int, int]]:
    """Character spans the model writes: after each assistant turn's first `<|start|>assistant`, up to and
    including the closer of its answer or call (an analysis message's `<|end|>` does not end the turn)."""
    spans, position = [], 0
    while (start := text.find("<|start|>assistant", position)) != -1:
        cursor, body = start, start + len("<|start|>assistant")
        while (closer := CLOSER.search(text, cursor)) is not None:
            header = text[text.rfind("<|start|>", 0, closer.start()) :].split("<|message|>")[0]
            cursor = closer.end()
            if closer.group() != "<|end|>" or "<|channel|>analysis" not in header:
                spans.append((body, closer.end()))
                break
        else:
            break  # the generation prompt: nothing written yet
        position = cursor
    return spans


def expected_mask(text: str, loss_on: str) -> list[int]:
    encoded = rf.reference(SOURCE).tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    spans = assistant_spans(text)
    spans = spans[-1:] if loss_on == "last_assistant" else spans
    return [
        int(loss_on == "all" or any(start < end <= stop for start, stop in spans))
        for end in (offset[1] for offset in encoded.offsets)
    ]


def check_parity(conversation: tuple[Any, ...]) -> None:
    messages, tools, add_generation_prompt, loss_on = conversation
    renderer, reference = rf.renderer(SOURCE), rf.reference(SOURCE)
    ours = renderer.render(messages, tools, add_generation_prompt, loss_on=loss_on)
    assert list(ours.token_ids) == reference.render_ids(messages, tools, add_generation_prompt)
    text = reference.tokenizer.apply_chat_template(
        renderer.adapter.template_messages(ours.messages),
        tools=tools,
        add_generation_prompt=add_generation_prompt,
        tokenize=False,
        **renderer.adapter.template_kwargs(),
    )
    assert renderer.template_text(messages, tools, add_generation_prompt) == text
    assert list(ours.loss_mask) == expected_mask(text, loss_on)


@rf.PARITY
@given(conversation=conversations())
def test_gpt_oss_matches_template(conversation: tuple[Any, ...]) -> None:
    check_parity(conversation)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": ""}],
        [{"role": "system", "content": ""}, {"role": "user", "content": "\n"}, {"role": "assistant", "content": " "}],
        [{"role": "user", "content": "🙂" * 30}, {"role": "assistant", "content": "\u00a0\u2003 \t"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "reasoning_content": ""}],
    ],
)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_edge_cases_match(messages: list[dict[str, Any]], add_generation_prompt: bool) -> None:
    check_parity((messages, None, add_generation_prompt, "assistant"))


SYSTEM = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message."
)
WEATHER = tool("get_weather", {"city": {"type": "string", "description": "A city."},
                               "unit": {"type": "string", "enum": ["c", "f"], "default": "c"}}, ("city",))  # fmt: skip


def pinned(**options: Any) -> Renderer:
    """A renderer of the tiny gpt-oss whose template clock reads 2025-08-05 (`options`: the template variables)."""
    family = GptOssFamily(current_date=datetime.date(2025, 8, 5), **options)
    return Renderer(family, rf.renderer(SOURCE).tokenizer, ImageResolver(None, None))


def test_the_template_writes_its_system_message_and_the_last_answer_with_its_reasoning_and_return() -> None:
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "add"}]
    assert pinned().template_text(messages) == (
        f"{SYSTEM}<|end|><|start|>user<|message|>2+2?<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>add<|end|>"
        "<|start|>assistant<|channel|>final<|message|>4<|return|>"
    )
    prompt = pinned().template_text([*messages, {"role": "user", "content": "3+3?"}], add_generation_prompt=True)
    assert prompt.endswith(  # an earlier answer: no reasoning, closed by <|end|>
        "<|start|>user<|message|>2+2?<|end|><|start|>assistant<|channel|>final<|message|>4<|end|>"
        "<|start|>user<|message|>3+3?<|end|><|start|>assistant"
    )
    options = {"reasoning_effort": "high", "model_identity": "You are Tiny."}
    head = pinned(**options).template_text(messages[:1])
    assert head.startswith("<|start|>system<|message|>You are Tiny.\n") and "\n\nReasoning: high\n\n" in head
    renderer = pinned(**options)
    reference = ReferenceRenderer(rf.reference(SOURCE).tokenizer, None, renderer.adapter)
    assert list(renderer.render(messages).token_ids) == reference.render_ids(messages)


def test_instructions_and_tools_form_the_developer_message_and_calls_and_results_use_commentary() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "reasoning_content": "need it", "tool_calls": [
            {"name": "get_weather", "arguments": {"city": "Oslo"}}]},
        {"role": "tool", "content": "rain"},
    ]  # fmt: skip
    assert pinned().template_text(messages, [WEATHER], add_generation_prompt=True) == (
        f"{SYSTEM}\nCalls to these tools must go to the commentary channel: 'functions'.<|end|>"
        "<|start|>developer<|message|># Instructions\n\nBe brief.\n\n# Tools\n\n## functions\n\n"
        "namespace functions {\n\n// get weather — ünïcode ok\ntype get_weather = (_: {\n// A city.\ncity: string,\n"
        'unit?: "c" | "f", // default: c,\n}) => any;\n\n} // namespace functions<|end|>'
        "<|start|>user<|message|>Weather in Oslo?<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>need it<|end|>"
        '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Oslo"}<|call|>'
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"rain"<|end|>'
        "<|start|>assistant"
    )
    answered = [*messages, {"role": "assistant", "content": "Rain."}]
    text = pinned().template_text(answered, [WEATHER])
    assert "need it" not in text  # a later answer drops the call's analysis
    assert text.endswith('"rain"<|end|><|start|>assistant<|channel|>final<|message|>Rain.<|return|>')
    no_tools = pinned().template_text([{"role": "system", "content": ""}, {"role": "user", "content": "hi"}])
    assert "<|start|>developer" not in no_tools  # no instructions and no tools: no developer message


def test_the_tiny_template_is_detected_and_told_apart() -> None:
    assert rf.renderer(SOURCE).family == SOURCE
    with pytest.raises(UnknownFamily):
        rf.renderer.__wrapped__(SOURCE, "llama3")
    with pytest.raises(UnknownFamily):
        rf.renderer.__wrapped__("llama3", SOURCE)
    tokenizer = rf.reference(SOURCE).tokenizer
    special = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>")
    ids = [tokenizer.convert_tokens_to_ids(token) for token in special]
    assert ids == [tokenizer.convert_tokens_to_ids("<|startoftext|>") + n for n in (8, 9, 10, 7, 5, 4, 14)]
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|return|>", "<|endoftext|>")
    template = (build_tiny_processor(SOURCE) / "chat_template.jinja").read_text(encoding="utf-8")
    assert "strftime_now('%Y-%m-%d')" in template


def test_the_date_is_the_templates_clock_pinned_when_the_family_is_made() -> None:
    family = GptOssFamily(current_date=datetime.date(2030, 1, 2))
    assert "Current date: 2030-01-02\n" in family.system_text(tools=False)
    assert family.template_kwargs()["strftime_now"]("%Y-%m-%d") == "2030-01-02"
    assert GptOssFamily().current_date == datetime.date.today()


CALL = {"name": "lookup", "arguments": {"q": "cat"}}
REFUSED = [
    ([{"role": "user", "content": [{"type": "image", "image": rf.image_source(0, "pil")}]}], None,
     "messages[0].content", "<image>"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "late"}], None, "messages[1].role", "system"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "", "tool_calls": [CALL, CALL]}], None,
     "messages[1].tool_calls", None),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "x", "reasoning_content": "y",
                                          "tool_calls": [CALL]}], None, "messages[1].reasoning_content", "y"),
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "r"}], None, "messages[1].role", "tool"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
      {"role": "assistant", "content": "done"}, {"role": "tool", "content": "r"}], None, "messages[3].role", "tool"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
      {"role": "tool", "content": "r", "name": "other"}], None, "messages[2].name", "other"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "<|channel|>final<|message|>x"}], None,
     "messages[1].content", "<|channel|>final<|message|>x"),
    ([{"role": "user", "content": "a"}], [{"type": "function", "function": {"name": "f"}}],
     "tools[0].function.description", None),
    ([{"role": "user", "content": "a"}],
     [tool("f", {"o": {"type": "object", "properties": {"x": {"type": "string"}}}})],
     "tools[0].function.parameters.properties.o.properties", {"x": {"type": "string"}}),
    ([{"role": "user", "content": "a"}], [tool("f", {"o": {"oneOf": [{"type": "string"}]}})],
     "tools[0].function.parameters.properties.o.oneOf", [{"type": "string"}]),
    ([{"role": "user", "content": "a"}], [tool("f", {"e": {"type": "string", "enum": ["a"], "default": 1}})],
     "tools[0].function.parameters.properties.e.default", 1),
]  # fmt: skip


@pytest.mark.parametrize(("messages", "tools", "field", "value"), REFUSED)
def test_what_the_template_cannot_write_is_refused_naming_field_and_value(
    messages: list[dict[str, Any]], tools: Any, field: str, value: Any
) -> None:
    with pytest.raises(InvalidMessage) as refused:
        rf.renderer(SOURCE).render(messages, tools)
    assert refused.value.field == field
    if value is not None:
        assert refused.value.value == value


@pytest.mark.parametrize(
    ("sampled", "reasoning", "content", "calls"),
    [
        ("<|channel|>final<|message|>Hello.<|return|>", None, "Hello.", []),
        ("<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>",
         "think", "4", []),
        ('<|channel|>analysis<|message|>need it<|end|><|start|>assistant<|channel|>commentary to=functions.lookup '
         '<|constrain|>json<|message|>{"q": "cat"}<|call|>', "need it", "", [("lookup", {"q": "cat"})]),
        (' to=functions.lookup<|channel|>commentary json<|message|>{"q": "dog"}<|call|>', None, "",
         [("lookup", {"q": "dog"})]),
        ("<|channel|>commentary<|message|>Checking.<|end|><|start|>assistant<|channel|>final<|message|>ok<|return|>",
         None, "Checking.ok", []),
        ("<|channel|>analysis<|message|>cut off mid-thought", "cut off mid-thought", "", []),
        ("plain text, no channels", None, "plain text, no channels", []),
    ],
)  # fmt: skip
def test_completions_are_parsed_back_by_channel(sampled: str, reasoning: Any, content: str, calls: list[Any]) -> None:
    renderer = rf.renderer(SOURCE)
    message = renderer.parse_completion(renderer.tokenizer.encode(sampled, add_special_tokens=False))
    assert (message.reasoning_content, message.text()) == (reasoning, content)
    assert [(call.name, call.arguments) for call in message.tool_calls] == calls
    assert not message.tool_call_errors


def test_a_call_whose_arguments_are_not_json_stays_content_with_an_error() -> None:
    renderer = rf.renderer(SOURCE)
    sampled = "<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{not json<|call|>"
    message = renderer.parse_completion(renderer.tokenizer.encode(sampled, add_special_tokens=False))
    assert message.text() == "{not json" and not message.tool_calls
    assert message.tool_call_errors[0].raw == "{not json" and "functions.lookup" in message.tool_call_errors[0].error


def test_a_rendered_turn_parses_back_to_its_message() -> None:
    renderer = rf.renderer(SOURCE)
    for reply in ({"role": "assistant", "content": "4", "reasoning_content": "add"},
                  {"role": "assistant", "content": "", "reasoning_content": "look", "tool_calls": [CALL]}):  # fmt: skip
        messages = [{"role": "user", "content": "q"}, reply]
        whole = renderer.render(messages, [TOOLS[0]])
        prompt = renderer.render(messages[:1], [TOOLS[0]], add_generation_prompt=True)
        assert whole.token_ids[: len(prompt)] == prompt.token_ids
        parsed = renderer.parse_completion(whole.token_ids[len(prompt) :])
        assert parsed.reasoning_content == reply["reasoning_content"] and parsed.text() == reply["content"]
        expected = [(call["name"], call["arguments"]) for call in reply.get("tool_calls", [])]
        assert [(call.name, call.arguments) for call in parsed.tool_calls] == expected


def test_the_prefix_report_says_earlier_turns_are_rewritten() -> None:
    renderer = rf.renderer(SOURCE)
    assert not renderer.prefix_stable
    assert "<|return|>" in renderer.prefix_note and "<|constrain|>json" in renderer.prefix_note
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "r"}]
    shorter = renderer.render(messages).token_ids
    longer = renderer.render([*messages, {"role": "user", "content": "more"}]).token_ids
    assert longer[: len(shorter)] != shorter


def content_text(rendered: Any, index: int) -> str:
    ids = [t for t, bit in zip(rendered.token_ids, rendered.content_of(index), strict=True) if bit]
    return rf.renderer(SOURCE).tokenizer.decode(ids)


def test_content_masks_mark_what_each_message_wrote() -> None:
    renderer = rf.renderer(SOURCE)
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "look"},
        {"role": "assistant", "content": "", "reasoning_content": "need it", "tool_calls": [CALL]},
        {"role": "tool", "content": "a cat"},
        {"role": "assistant", "content": "done", "reasoning_content": "easy"},
    ]
    rendered = renderer.render(messages, [TOOLS[0]])
    assert [content_text(rendered, index) for index in range(len(messages))] == [
        "be brief",
        "look",
        ' to=functions.lookup<|channel|>commentary json<|message|>{"q": "cat"}',  # its analysis dropped: answered
        '"a cat"',
        "<|channel|>analysis<|message|>easy<|end|><|start|>assistant<|channel|>final<|message|>done",
    ]
    call_tokens = [t for t, owner in zip(rendered.token_ids, rendered.message_indices, strict=True) if owner == 2]
    assert renderer.tokenizer.decode(call_tokens).startswith("<|start|>assistant to=functions.lookup<|channel|>")
    trained_not_content = {
        renderer.tokenizer.decode([t])
        for t, loss, bit in zip(rendered.token_ids, rendered.loss_mask, rendered.content_mask, strict=True)
        if loss and not bit
    }
    assert trained_not_content == {"<|call|>", "<|return|>"}
    prompt = renderer.render(messages[:4], [TOOLS[0]], add_generation_prompt=True)
    assert not any(prompt.content_mask[len(prompt) - 2 :])  # <|start|>assistant is the template's


def test_bridging_continues_after_a_sampled_answer_a_sampled_call_and_a_cut_off_reply() -> None:
    renderer = rf.renderer(SOURCE)
    encode = renderer.tokenizer.encode
    prompt = renderer.render([{"role": "user", "content": "zoom"}], [TOOLS[0]], add_generation_prompt=True)
    call = encode('<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{"q": 2}<|call|>',
                  add_special_tokens=False)  # fmt: skip
    turn = renderer.append_completion(prompt, call)
    assert turn.messages[-1].tool_calls[0].arguments == {"q": 2}
    bridged = renderer.bridge(turn, [{"role": "tool", "content": "zoomed"}])
    assert bridged.token_ids[: len(turn)] == turn.token_ids
    tail = renderer.tokenizer.decode(list(bridged.token_ids[len(turn) :]))
    result = '<|start|>functions.lookup to=assistant<|channel|>commentary<|message|>"zoomed"<|end|>'
    assert tail == result + "<|start|>assistant"
    answer = renderer.append_completion(bridged, encode("<|channel|>final<|message|>Done.<|return|>",
                                                         add_special_tokens=False))  # fmt: skip
    after = renderer.bridge(answer, [{"role": "user", "content": "thanks"}])
    assert renderer.tokenizer.decode(list(after.token_ids[len(answer) :])).startswith("<|start|>user<|message|>")
    cut = renderer.append_completion(prompt, encode("<|channel|>final<|message|>Do", add_special_tokens=False))
    closed = renderer.bridge(cut, [{"role": "user", "content": "go on"}])
    assert renderer.tokenizer.decode(list(closed.token_ids[len(cut) : len(cut) + 1])) == "<|end|>"
    full = renderer.render(closed.messages, [TOOLS[0]], add_generation_prompt=True)
    assert full.token_ids == closed.token_ids  # the cut-off answer closed as the template closes an earlier one
    assert json.loads(json.dumps(renderer.adapter.template_messages(closed.messages)))[1]["content"] == "Do"
