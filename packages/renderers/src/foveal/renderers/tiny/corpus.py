"""The tiny tokenizer's training text: English sentences, numbers, JSON tool calls and reasoning.

It is generated here, from a seeded `random.Random`, because the network is closed and every machine must
train the identical tokenizer. The mix matters: chat prose, digits, punctuation, JSON keys and code-like
indentation give the BPE the kinds of merges a real Qwen vocabulary has, so token counts in tests behave
like real ones (a word is usually one or two tokens, a number one token per digit).
"""

from __future__ import annotations

import json
import random

_NOUNS = """
time person year way day thing man world life hand part child eye woman place work week case point number
group problem fact house room mother water name family story book word question answer picture image
photo color shape line box cup table chair door window car bus train road
street city river mountain tree flower garden dog cat bird fish horse cow apple orange banana bread cake
coffee tea milk glass bottle phone screen computer keyboard mouse paper pen letter page chart graph map
sign text label button menu icon file folder model token value result reason idea plan step list test
weather temperature price order item product store market school teacher student class lesson game team
player score ball field music song movie light shadow sky sun moon cloud rain snow wind ocean beach
island forest desert bridge tower building window kitchen bedroom office desk lamp clock watch shoe shirt
hat bag key ring coin card ticket flight hotel trip friend doctor city country language user assistant system
tool function message response reply hello thanks
""".split()
_VERBS = """
see look find show tell ask answer give take make use know think want need try call move turn open close
read write draw count measure compare describe explain check search play run walk stand sit hold carry
build break fix start stop help keep leave bring send buy sell pay cost grow change follow learn teach
""".split()
_COLORS = "red blue green yellow black white gray orange purple pink brown".split()
_SHAPES = "circle square triangle star rectangle arrow dot cross".split()
_ADJECTIVES = _COLORS + """
small large big little tall short long
round square bright dark light heavy new old young good bad best first last next left right top bottom
middle happy quick slow hot cold warm clear simple hard easy empty full open closed correct wrong
""".split()
_FUNCTION_WORDS = """
the a an of to in on at by for with from about into over under between behind near and or but so if
because while when where which who what how why this that these those there here it they we you he she
is are was were be been has have had do does did can could will would should may might must not no yes
""".split()
_CITIES = "Paris London Tokyo Berlin Madrid Rome Cairo Lima Oslo Seoul Delhi Sydney Toronto Boston".split()
_TOOLS = {
    "get_weather": {"city": _CITIES, "unit": ["celsius", "fahrenheit"]},
    "search": {"query": ["red circle", "train times", "coffee shops", "python list sort", "moon phase"]},
    "calculator": {"expression": ["2 + 2", "17 * 3", "(4 + 5) / 3", "100 - 58", "12 ** 2"]},
    "crop_image": {"x": [0, 16, 64, 128], "y": [0, 8, 48, 96], "width": [32, 64, 112], "height": [32, 64, 112]},
    "get_time": {"timezone": ["UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York"]},
}


def _sentence(rng: random.Random) -> str:
    content = _NOUNS + _VERBS + _ADJECTIVES + _SHAPES
    words = [rng.choice(content if i % 2 else _FUNCTION_WORDS) for i in range(rng.randint(5, 14))]
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "?", "!", ",", ";", ":"])


def _image_qa(rng: random.Random) -> str:
    color, shape, noun = rng.choice(_COLORS), rng.choice(_SHAPES), rng.choice(_NOUNS)
    count = rng.randint(0, 12)
    return rng.choice(
        [
            f"What color is the {shape} in the image? The {shape} is {color}.",
            f"How many {noun}s are in the picture? There are {count} {noun}s.",
            f"Describe this image. A {color} {shape} sits near a {noun} at the top left.",
            f"Where is the {noun}? It is at ({rng.randint(0, 640)}, {rng.randint(0, 480)}) in the photo.",
        ]
    )


def _numbers(rng: random.Random) -> str:
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    month, day, hour = rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23)
    return rng.choice(
        [
            f"{a} + {b} = {a + b}",
            f"{a} * {b} = {a * b}",
            f"The total is ${a}.{b % 100:02d} for {rng.randint(1, 9)} items.",
            f"Date: 20{a % 30:02d}-{month:02d}-{day:02d}, {hour:02d}:{b % 60:02d}",
            f"Answer: {a - b}",
        ]
    )


def _tool_call(rng: random.Random) -> str:
    name = rng.choice(sorted(_TOOLS))
    arguments = {key: rng.choice(values) for key, values in _TOOLS[name].items()}
    call = json.dumps({"name": name, "arguments": arguments})
    schema = json.dumps(
        {
            "type": "function",
            "function": {
                "name": name,
                "description": f"{rng.choice(_VERBS).capitalize()} the {rng.choice(_NOUNS)}.",
                "parameters": {
                    "type": "object",
                    "properties": {key: {"type": "string"} for key in arguments},
                    "required": list(arguments),
                },
            },
        }
    )
    response = f"<tool_response>\n{json.dumps(arguments)}\n</tool_response>"
    return rng.choice([f"<tool_call>\n{call}\n</tool_call>", schema, response])


def _reasoning(rng: random.Random) -> str:
    a, b = rng.randint(2, 50), rng.randint(2, 50)
    return (
        f"<think>\nLet me think step by step. First, I {rng.choice(_VERBS)} the {rng.choice(_NOUNS)}. "
        f"Then {a} times {b} is {a * b}, so the answer is {a * b}.\n</think>\n\nThe answer is {a * b}."
    )


def _code(rng: random.Random) -> str:
    name, arg = rng.choice(_VERBS), rng.choice(_NOUNS)
    return f"def {name}_{arg}({arg}s):\n    for {arg} in {arg}s:\n        print({arg})\n    return len({arg}s)\n"


def _document(rng: random.Random) -> str:
    title = f"{rng.choice(_ADJECTIVES).capitalize()} {rng.choice(_NOUNS)}"
    items = "\n".join(f"- {rng.choice(_NOUNS)} {rng.randint(1, 9)}" for _ in range(rng.randint(2, 4)))
    return f"## {title}\n\n{_sentence(rng)}\n\n{items}\n\nStep {rng.randint(1, 5)}\n\n{_sentence(rng)}"


_KINDS = (_sentence, _sentence, _document, _image_qa, _numbers, _tool_call, _reasoning, _code)


def training_corpus(lines: int = 6000, seed: int = 0) -> list[str]:
    """`lines` pieces of mixed chat-like text; the same arguments always give the same list."""
    rng = random.Random(seed)
    return [rng.choice(_KINDS)(rng) for _ in range(lines)]
