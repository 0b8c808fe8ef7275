"""The tiny chat templates render exactly what the real Qwen templates render (expected strings by hand)."""

from __future__ import annotations

import json

import pytest

DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_JSON = (
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather.", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}'
)


def tools_system(system: str | None, *tool_lines: str) -> str:
    """The Qwen3 tools system turn, as the real template writes it."""
    return (
        "<|im_start|>system\n"
        + (f"{system}\n\n" if system is not None else "")
        + "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        + "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
        + "".join(f"\n{line}" for line in tool_lines)
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        + "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        + '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    )


def call(name: str, arguments: object) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.fixture(params=["qwen2_vl", "qwen2_5_vl"])
def qwen2_render(request, tiny_tokenizer):
    tokenizer = tiny_tokenizer(request.param)
    return lambda messages, **kwargs: tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


@pytest.fixture
def qwen3_vl_render(tiny_tokenizer):
    tokenizer = tiny_tokenizer("qwen3_vl")
    return lambda messages, **kwargs: tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


@pytest.fixture
def qwen3_render(tiny_tokenizer):
    tokenizer = tiny_tokenizer("qwen3")
    return lambda messages, **kwargs: tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def test_qwen2_vl_adds_the_default_system_prompt_when_none_is_given(qwen2_render):
    rendered = qwen2_render([{"role": "user", "content": "Hello"}], add_generation_prompt=True)
    assert rendered == DEFAULT_SYSTEM + "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"


def test_qwen2_vl_keeps_a_given_system_prompt_and_renders_images_in_order(qwen2_render):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A cat."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And these?"},
                {"type": "image_url", "image_url": {"url": "file:///a.png"}},
                {"image": "b.png"},
            ],
        },
    ]
    assert qwen2_render(messages, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        f"<|im_start|>user\n{IMAGE}What is this?<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n"
        f"<|im_start|>user\nAnd these?{IMAGE}{IMAGE}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_qwen2_vl_numbers_pictures_and_videos_with_add_vision_id(qwen2_render):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Compare."}]},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": [{"type": "image"}]},
    ]
    assert qwen2_render(messages, add_vision_id=True) == (
        DEFAULT_SYSTEM
        + f"<|im_start|>user\nPicture 1: {IMAGE}Video 1: {VIDEO}Compare.<|im_end|>\n"
        + "<|im_start|>assistant\nDone.<|im_end|>\n"
        + f"<|im_start|>user\nPicture 2: {IMAGE}<|im_end|>\n"
    )


def test_qwen2_vl_ignores_tools_and_renders_tool_messages_under_their_own_role(qwen2_render):
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Paris"})]},
        {"role": "tool", "content": "sunny"},
    ]
    assert qwen2_render(messages, tools=[WEATHER]) == (
        DEFAULT_SYSTEM
        + "<|im_start|>user\nWeather?<|im_end|>\n"
        + "<|im_start|>assistant\n<|im_end|>\n"
        + "<|im_start|>tool\nsunny<|im_end|>\n"
    )


def test_qwen3_vl_has_no_default_system_prompt(qwen3_vl_render):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    assert qwen3_vl_render(messages, add_generation_prompt=True) == (
        f"<|im_start|>user\n{IMAGE}Describe.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen3_vl_keeps_only_the_leading_system_message_and_ignores_reasoning(qwen3_vl_render):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You see well."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Left:"},
                {"type": "image"},
                {"type": "text", "text": " right:"},
                {"type": "image"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Both are cats."}], "reasoning_content": "Look."},
        {"role": "system", "content": "Dropped."},
        {"role": "user", "content": "Sure?"},
    ]
    assert qwen3_vl_render(messages, add_generation_prompt=True) == (
        "<|im_start|>system\nYou see well.<|im_end|>\n"
        f"<|im_start|>user\nLeft:{IMAGE} right:{IMAGE}<|im_end|>\n"
        "<|im_start|>assistant\nBoth are cats.<|im_end|>\n"
        "<|im_start|>user\nSure?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_qwen3_vl_renders_tools_calls_and_grouped_tool_responses_with_images(qwen3_vl_render):
    messages = [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read the sign."}]},
        {
            "role": "assistant",
            "content": "Zooming.",
            "tool_calls": [call("zoom", {"box": [0, 0, 10, 10]}), call("zoom", '{"box": [5, 5, 9, 9]}')],
        },
        {"role": "tool", "content": [{"type": "image"}, {"type": "text", "text": "crop 1"}]},
        {"role": "tool", "content": "crop 2 failed"},
        {"role": "assistant", "content": "It says STOP."},
    ]
    assert qwen3_vl_render(messages, tools=[WEATHER]) == (
        tools_system("Use tools.", WEATHER_JSON)
        + f"<|im_start|>user\n{IMAGE}Read the sign.<|im_end|>\n"
        + "<|im_start|>assistant\nZooming.\n"
        + '<tool_call>\n{"name": "zoom", "arguments": {"box": [0, 0, 10, 10]}}\n</tool_call>\n'
        + '<tool_call>\n{"name": "zoom", "arguments": {"box": [5, 5, 9, 9]}}\n</tool_call><|im_end|>\n'
        + f"<|im_start|>user\n<tool_response>\n{IMAGE}crop 1\n</tool_response>\n"
        + "<tool_response>\ncrop 2 failed\n</tool_response><|im_end|>\n"
        + "<|im_start|>assistant\nIt says STOP.<|im_end|>\n"
    )


def test_qwen3_vl_tool_call_without_text_has_no_leading_newline(qwen3_vl_render):
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
    ]
    assert qwen3_vl_render(messages, tools=[WEATHER]) == (
        tools_system(None, WEATHER_JSON)
        + "<|im_start|>user\nWeather in Oslo?<|im_end|>\n"
        + "<|im_start|>assistant\n"
        + '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
    )


def test_qwen3_generation_prompt_and_enable_thinking_false(qwen3_render):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    head = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert qwen3_render(messages, add_generation_prompt=True) == head
    assert qwen3_render(messages, add_generation_prompt=True, enable_thinking=True) == head
    assert qwen3_render(messages, add_generation_prompt=True, enable_thinking=False) == head + "<think>\n\n</think>\n\n"


def test_qwen3_keeps_reasoning_only_after_the_last_user_query(qwen3_render):
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Two plus two."},
        {"role": "user", "content": "Times 3?"},
        {"role": "assistant", "content": "12", "reasoning_content": "\nFour times three.\n"},
    ]
    assert qwen3_render(messages) == (
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nTimes 3?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nFour times three.\n</think>\n\n12<|im_end|>\n"
    )


def test_qwen3_splits_inline_thinking_and_gives_the_final_turn_an_empty_block(qwen3_render):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\ngreet\n</think>\n\nHello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye!"},
    ]
    assert qwen3_render(messages) == (
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nBye!<|im_end|>\n"
    )


def test_qwen3_multi_step_tool_turns_keep_reasoning_and_group_tool_responses(qwen3_render):
    messages = [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Call the tool twice.",
            "tool_calls": [call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Rome"})],
        },
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "rainy"},
        {"role": "assistant", "content": "Paris is sunny, Rome is rainy.", "reasoning_content": "Summarize."},
    ]
    assert qwen3_render(messages, tools=[WEATHER]) == (
        tools_system("You help.", WEATHER_JSON)
        + "<|im_start|>user\nWeather in Paris and Rome?<|im_end|>\n"
        + "<|im_start|>assistant\n<think>\nCall the tool twice.\n</think>\n\n"
        + '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        + '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n'
        + "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n"
        + "<tool_response>\nrainy\n</tool_response><|im_end|>\n"
        + "<|im_start|>assistant\n<think>\nSummarize.\n</think>\n\nParis is sunny, Rome is rainy.<|im_end|>\n"
    )


def test_qwen3_a_user_turn_holding_only_a_tool_response_is_not_a_query(qwen3_render):
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A1", "reasoning_content": "r1"},
        {"role": "user", "content": "<tool_response>\nok\n</tool_response>"},
        {"role": "assistant", "content": "A2", "reasoning_content": "r2"},
    ]
    assert qwen3_render(messages) == (
        "<|im_start|>user\nQ<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nr1\n</think>\n\nA1<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\nr2\n</think>\n\nA2<|im_end|>\n"
    )


def test_qwen3_drops_non_string_content_and_keeps_later_system_messages(qwen3_render):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "dropped"}]},
        {"role": "system", "content": "late rule"},
        {"role": "user", "content": "Go"},
    ]
    assert qwen3_render(messages) == (
        "<|im_start|>user\n<|im_end|>\n<|im_start|>system\nlate rule<|im_end|>\n<|im_start|>user\nGo<|im_end|>\n"
    )


def test_tool_schemas_are_written_as_compact_unsorted_json(qwen3_render):
    tool = {"type": "function", "function": {"name": "z", "description": "é ü", "parameters": {"b": 1, "a": 2}}}
    rendered = qwen3_render([{"role": "user", "content": "x"}], tools=[tool])
    assert f"<tools>\n{json.dumps(tool, ensure_ascii=False)}\n</tools>" in rendered


LLAMA_BOS = "<|begin_of_text|>"
LLAMA_CUTOFF = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
WEATHER_INDENTED = (
    '{\n    "type": "function",\n    "function": {\n        "name": "get_weather",\n'
    '        "description": "Current weather.",\n        "parameters": {\n            "type": "object",\n'
    '            "properties": {\n                "city": {\n                    "type": "string"\n'
    '                }\n            },\n            "required": [\n                "city"\n            ]\n'
    "        }\n    }\n}"
)
LLAMA_FORMAT = (
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n"
)


def llama_turn(role: str, text: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>"


@pytest.fixture
def llama3_render(tiny_tokenizer):
    tokenizer = tiny_tokenizer("llama3")
    return lambda messages, **kwargs: tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def test_llama3_always_writes_its_system_turn_and_trims_content(llama3_render):
    messages = [{"role": "user", "content": "  Hi there \n"}, {"role": "assistant", "content": "\nHello! "}]
    assert llama3_render(messages, add_generation_prompt=False) == (
        LLAMA_BOS
        + llama_turn("system", LLAMA_CUTOFF)
        + llama_turn("user", "Hi there")
        + llama_turn("assistant", "Hello!")
    )
    prompt = llama3_render(messages[:1], add_generation_prompt=True)
    assert prompt.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_llama3_puts_the_system_message_after_the_date_and_keeps_later_system_turns(llama3_render):
    messages = [
        {"role": "system", "content": " Be brief.\n"},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": " late rule "},
        {"role": "user", "content": "Go"},
    ]
    assert llama3_render(messages, date_string="01 Jan 2025") == (
        LLAMA_BOS
        + llama_turn("system", "Cutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\nBe brief.")
        + llama_turn("user", "Hi")
        + llama_turn("system", "late rule")
        + llama_turn("user", "Go")
    )


def test_llama3_tools_go_into_the_first_user_message_calls_are_json_results_are_ipython(llama3_render):
    messages = [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": " Weather in Paris? "},
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Paris"})]},
        {"role": "tool", "content": " sunny, 25°C "},
        {"role": "assistant", "content": "Sunny."},
    ]
    user = (
        "Given the following functions, please respond with a JSON for a function call with its proper "
        "arguments that best answers the given prompt.\n\n" + LLAMA_FORMAT + WEATHER_INDENTED + "\n\nWeather in Paris?"
    )
    assert llama3_render(messages, tools=[WEATHER], add_generation_prompt=True) == (
        LLAMA_BOS
        + llama_turn("system", "Environment: ipython\n" + LLAMA_CUTOFF + "You help.")
        + llama_turn("user", user)
        + llama_turn("assistant", '{"name": "get_weather", "parameters": {"city": "Paris"}}')
        + llama_turn("ipython", '" sunny, 25°C "')
        + llama_turn("assistant", "Sunny.")
        + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama3_can_put_tools_in_the_system_turn_instead(llama3_render):
    messages = [{"role": "user", "content": "Weather?"}]
    system = (
        "Environment: ipython\n" + LLAMA_CUTOFF + "You have access to the following functions. To call a function, "
        "please respond with JSON for a function call." + LLAMA_FORMAT + WEATHER_INDENTED + "\n\n"
    )
    assert llama3_render(messages, tools=[WEATHER], tools_in_user_message=False) == (
        LLAMA_BOS + llama_turn("system", system) + llama_turn("user", "Weather?")
    )


def test_llama3_drops_call_content_and_refuses_several_calls_or_no_user_for_the_tools(llama3_render):
    import jinja2

    one = {"role": "assistant", "content": "Let me check.", "tool_calls": [call("get_weather", '{"city": "Oslo"}')]}
    rendered = llama3_render([{"role": "user", "content": "Oslo?"}, one])
    # The content is dropped, and arguments given as a string are written through tojson: quoted.
    quoted = '{"name": "get_weather", "parameters": "{\\"city\\": \\"Oslo\\"}"}'
    assert rendered.endswith(llama_turn("assistant", quoted))
    two = {**one, "tool_calls": one["tool_calls"] * 2}
    with pytest.raises(jinja2.TemplateError, match="one tool call"):
        llama3_render([{"role": "user", "content": "Oslo?"}, two])
    with pytest.raises(jinja2.TemplateError, match="must follow the system message"):
        llama3_render([{"role": "system", "content": "s"}], tools=[WEATHER])


def gemma_turn(role: str, text: str) -> str:
    return f"<start_of_turn>{role}\n{text}<end_of_turn>\n"


@pytest.fixture
def gemma3_render(tiny_tokenizer):
    tokenizer = tiny_tokenizer("gemma3")
    return lambda messages, **kwargs: tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def test_gemma3_writes_bos_once_trims_content_and_calls_the_assistant_model(gemma3_render):
    messages = [{"role": "user", "content": "  Hi there \n"}, {"role": "assistant", "content": "\nHello! "}]
    assert gemma3_render(messages) == "<bos>" + gemma_turn("user", "Hi there") + gemma_turn("model", "Hello!")
    prompt = gemma3_render(messages[:1], add_generation_prompt=True)
    assert prompt == "<bos>" + gemma_turn("user", "Hi there") + "<start_of_turn>model\n"


def test_gemma3_puts_the_untrimmed_system_text_and_a_blank_line_into_the_first_user_turn(gemma3_render):
    messages = [
        {"role": "system", "content": " Be brief.\n"},
        {
            "role": "user",
            "content": [{"type": "text", "text": " Look: "}, {"type": "image"}, {"type": "text", "text": "x "}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": " A dot. "}]},
        {"role": "user", "content": "More?"},
    ]
    assert gemma3_render(messages) == (
        "<bos>"
        + gemma_turn("user", " Be brief.\n\n\nLook:<start_of_image>x")
        + gemma_turn("model", "A dot.")
        + gemma_turn("user", "More?")
    )
    parts = [{"role": "system", "content": [{"type": "text", "text": "S"}]}, {"role": "user", "content": "U"}]
    assert gemma3_render(parts) == "<bos>" + gemma_turn("user", "S\n\nU")


def test_gemma3_raises_when_turns_do_not_alternate_and_ignores_tools(gemma3_render):
    import jinja2

    for messages in (
        [{"role": "assistant", "content": "a"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
    ):
        with pytest.raises(jinja2.TemplateError, match="alternate"):
            gemma3_render(messages)
    called = {"role": "assistant", "content": "ok", "tool_calls": [call("get_weather", {"city": "Oslo"})]}
    rendered = gemma3_render([{"role": "user", "content": "Oslo?"}, called], tools=[WEATHER])
    assert rendered == "<bos>" + gemma_turn("user", "Oslo?") + gemma_turn("model", "ok")
