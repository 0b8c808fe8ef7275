"""Chat templates of the tiny families, written for Foveal to give the same output as the real ones.

The templates are our own Jinja (shared macros in templates/media.jinja and templates/tools.jinja, one body
per format), checked against hand-written expected strings in tests/test_tiny_chat_templates.py. Facts come
from the real files: Qwen2-VL-7B-Instruct / Qwen2.5-VL-7B-Instruct chat_template.json, the Qwen3-VL-8B-Instruct
chat template, and the Qwen3 tokenizer_config.json chat_template (current revision, as copied in llama.cpp's
models/templates and many public repositories).

qwen2_vl (used by qwen2_vl and qwen2_5_vl; the real processor template has no tools, so neither has this):
  - "<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n" first unless messages[0] is a system message;
  - every message, any role (system, user, assistant, tool), as "<|im_start|>{role}\\n{content}<|im_end|>\\n";
  - content is a string or parts: image parts (type "image", or an "image"/"image_url" key) become
    "<|vision_start|><|image_pad|><|vision_end|>", video parts the <|video_pad|> block, text parts their text,
    with "Picture N: " / "Video N: " before each when add_vision_id (counted over the conversation);
  - tool_calls and reasoning_content are not rendered; add_generation_prompt appends "<|im_start|>assistant\\n".
qwen3_vl (Qwen3-VL Instruct):
  - no default system turn; a leading system message (string or text parts) opens the conversation, every
    later system message is dropped;
  - with tools: one system turn "{system}\\n\\n# Tools ... <tools>\\n{json per tool}\\n</tools> ... <|im_end|>\\n";
  - user turns render images/videos/text as above; assistant turns render text only, then each tool call as
    "<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>", newline-separated (and after any text);
  - consecutive tool messages form one user turn of "\\n<tool_response>\\n...\\n</tool_response>" blocks,
    which may hold images; reasoning_content is ignored; add_generation_prompt as above.
qwen3 (Qwen3 text):
  - system/tools header as qwen3_vl, but content must be a string: other content renders as "";
  - later system messages are kept; user turns as plain text;
  - the "last query" is the last user message not wholly "<tool_response>...</tool_response>"; assistant turns
    after it render "<think>\\n{reasoning}\\n</think>\\n\\n{content}" when they are the last message or have
    reasoning; earlier turns drop their reasoning. reasoning_content wins; otherwise a "...</think>" prefix of
    the content is split off as the reasoning;
  - tool calls and grouped tool responses as qwen3_vl (text only);
  - add_generation_prompt appends "<|im_start|>assistant\\n", plus "<think>\\n\\n</think>\\n\\n" when
    enable_thinking is False.
llama3 (Llama 3.1 Instruct, text; from its tokenizer_config.json chat_template, as copied in many public repositories):
  - bos_token first, then a system turn that is always written: "<|start_header_id|>system<|end_header_id|>\n\n",
    "Environment: ipython\n" when tools are given, "Cutting Knowledge Date: December 2023\nToday Date: "
    + date_string (default "26 Jul 2024") + "\n\n", the leading system message's content trimmed, "<|eot_id|>";
  - with tools and tools_in_user_message (the default), the first message after the system one, whatever its role,
    becomes a user turn: the "Given the following functions, ..." preamble, each tool as tojson(indent=4) + "\n\n",
    then that message's content trimmed (no message there: the template raises); with tools_in_user_message false
    the "You have access to the following functions. ..." preamble and the tools go into the system turn;
  - every other turn "<|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|>", later system
    messages included; no newline between turns;
  - an assistant message with tool_calls prints only its call, '{"name": "...", "parameters": ' + tojson + "}",
    and raises unless there is exactly one; tool (or ipython) messages are "ipython" turns whose content is
    written with tojson when it is a mapping or iterable (a string too: it gets quoted), untrimmed;
  - add_generation_prompt appends "<|start_header_id|>assistant<|end_header_id|>\n\n".
gemma3 (Gemma 3 instruction-tuned, e.g. gemma-3-4b-it; from its chat template's behaviour, as shipped in its
tokenizer_config.json / chat_template.json):
  - bos_token first, once;
  - a leading system message is not a turn: its content (a string; for a list, the text of its first part) plus
    "\n\n" is written, untrimmed, at the start of the first turn's content; later messages alternate
    user / assistant starting with user, or the template raises (a "tool" or later "system" message in an
    assistant slot passes the check and prints a turn of that role);
  - every turn "<start_of_turn>{role}\n{content}<end_of_turn>\n" with assistant written as "model"; string
    content is trimmed, in a list each text part is trimmed on its own and each image part prints
    "<start_of_image>" (Gemma3Processor replaces it by "\n\n<start_of_image>" + image_seq_length x
    "<image_soft_token>" + "<end_of_image>\n\n"); tools, tool_calls and reasoning_content are not printed;
  - add_generation_prompt appends "<start_of_turn>model\n".
glm4v (GLM-4.1V-9B-Thinking; from its published chat_template.jinja's behaviour, rendered as transformers renders
templates, trim_blocks and lstrip_blocks on):
  - "[gMASK]<sop>" first, once; then every message in order, no separator and no end-of-turn token;
  - system "<|system|>\n{content}", assistant "<|assistant|>\n{content}" (content printed as is: a list would
    print its Python repr; "<|assistant|>{metadata}\n{content}" when a message has `metadata`), user
    "<|user|>\n" then a string as is, or per part: video -> "<|begin_of_video|><|video|><|end_of_video|>", image
    -> "<|begin_of_image|><|image|><|end_of_image|>", text -> its text; any other role prints nothing;
  - no tools, tool calls or reasoning handling: earlier assistant turns keep whatever `<think>` they hold;
  - add_generation_prompt appends "<|assistant|>\n".
internvl (InternVL 3.5, HF-format checkpoints such as InternVL3_5-1B-HF; from the template the HF conversion
writes):
  - no default system turn; every message, whatever its role, is "<|im_start|>{role}\n" + content + "<|im_end|>\n";
  - string content as is; in a list, image -> "<IMG_CONTEXT>\n" (InternVLProcessor replaces the <IMG_CONTEXT> by
    "<img>" + "<IMG_CONTEXT>" x (tiles * image_seq_length) + "</img>"), video -> "<video>\n", text -> its text;
  - no tools, tool calls or reasoning handling;
  - add_generation_prompt appends "<|im_start|>assistant\n".
qwen3_vl_thinking (Qwen3-VL Thinking, e.g. Qwen3-VL-8B-Thinking):
  - qwen3_vl's system/tools header, user and tool turns; assistant turns follow qwen3's reasoning rules (last
    query found on the rendered content, images included; reasoning_content wins, else a "...</think>" prefix);
  - add_generation_prompt appends "<|im_start|>assistant\n<think>\n".
smolvlm (SmolVLM2 Instruct, e.g. SmolVLM2-2.2B-Instruct; from its published chat template's behaviour):
  - "<|im_start|>" first, once; then every message, whatever its role, as role | capitalize + ":" (when the first
    content part is an image) or ": " (otherwise), each part (text -> its text, image -> "<image>", which
    SmolVLMProcessor expands to the tiled block, video -> "<video>"), then "<end_of_utterance>\n";
  - content is read as a list of parts: a plain string prints no text at all;
  - no tools, tool calls or reasoning handling;
  - add_generation_prompt appends "Assistant:" (no space).
gpt_oss (gpt-oss-20b / 120b, harmony format; from its published chat_template.jinja's behaviour):
  - "<|start|>system<|message|>" + model_identity (default "You are ChatGPT, a large language model trained by
    OpenAI.") + "\nKnowledge cutoff: 2024-06\nCurrent date: " + strftime_now("%Y-%m-%d") + "\n\nReasoning: "
    + reasoning_effort (default "medium") + "\n\n# Valid channels: analysis, commentary, final. Channel must be
    included for every message." + (with tools) "\nCalls to these tools must go to the commentary channel:
    'functions'." + "<|end|>", always;
  - a leading system or developer message's content, and the tools, form "<|start|>developer<|message|>" +
    "# Instructions\n\n{content}\n\n" (if content) + "# Tools\n\n## functions\n\nnamespace functions {\n\n"
    + per tool "// {description}\ntype {name} = " + "(_: {\n" + per parameter ["// {description}\n"]
    "{name}[?]: {type}[, // default: {default}],\n" + "}) => any;\n\n" (or "() => any;\n\n" without
    properties) + "} // namespace functions" + "<|end|>"; types: string (enum as "a" | "b", | null if nullable),
    number (also integer), boolean, arrays of those as T[], type lists joined by " | ", object, any;
  - user "<|start|>user<|message|>{content}<|end|>"; later system messages print nothing;
  - assistant: "<|start|>assistant<|channel|>final<|message|>{content}<|end|>"; the last message when no generation
    prompt is added gets "<|start|>assistant<|channel|>analysis<|message|>{thinking}<|end|>" first (if it has
    `thinking`) and ends in "<|return|>"; with tool_calls (first call only): an analysis message of its content or
    thinking (both raise) unless a later assistant message without tool_calls exists, then "<|start|>assistant
    to=functions.{name}<|channel|>commentary json<|message|>{arguments | tojson}<|call|>"; content holding
    "<|channel|>analysis<|message|>" or "<|channel|>final<|message|>" raises;
  - tool "<|start|>functions.{last call's name} to=assistant<|channel|>commentary<|message|>{content | tojson}<|end|>"
    (no call before it since the last answer: raises);
  - add_generation_prompt appends "<|start|>assistant".
Not reproduced: video timestamps, Llama's builtin_tools (<|python_tag|> calls ending in <|eom_id|>), gpt-oss's
builtin_tools (browser, python), a tool call's content_type, and its nested object and oneOf parameter types
(the tiny template raises for those; the family refuses them).
"""

from __future__ import annotations

from importlib import resources

from foveal.renderers.errors import UnknownFamily

# Fragments of each template, in order: shared macros first, then the body.
_PARTS = {
    "qwen2_vl": ("media", "qwen2_vl"),
    "qwen3_vl": ("media", "tools", "qwen3_vl"),
    "qwen3_vl_thinking": ("media", "tools", "qwen3_vl_thinking"),
    "qwen3": ("tools", "qwen3"),
    "llama3": ("llama3",),
    "gpt_oss": ("gpt_oss",),
    "gemma3": ("gemma3",),
    "glm4v": ("glm4v",),
    "internvl": ("internvl",),
    "smolvlm": ("smolvlm",),
}
TEMPLATE_NAMES = tuple(_PARTS)


def chat_template(name: str) -> str:
    """The full Jinja source of one template, as written to chat_template.jinja."""
    if name not in _PARTS:
        raise UnknownFamily("chat_template", name, f"one of {', '.join(TEMPLATE_NAMES)}")
    folder = resources.files("foveal.renderers.tiny") / "templates"
    return "\n".join((folder / f"{part}.jinja").read_text(encoding="utf-8").strip() for part in _PARTS[name]) + "\n"
