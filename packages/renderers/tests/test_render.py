"""Renderer behaviour beyond parity: family choice, refusals, images and descriptors, masks, speed path."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.errors import FingerprintMismatch, PlaceholderMismatch, UnknownFamily
from foveal.renderers.factory import load_renderer
from foveal.renderers.messages import InvalidMessage
from foveal.renderers.tiny import build_tiny_processor

import rendering_fixtures as rf


def user_with(*parts: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def image(index: int = 0, kind: str = "pil") -> dict[str, Any]:
    return {"type": "image", "image": rf.image_source(index, kind)}


@pytest.mark.parametrize(
    ("source", "family"),
    [
        ("qwen2_vl", "qwen2_vl"),
        ("qwen2_5_vl", "qwen2_vl"),
        ("qwen3_vl", "qwen3_vl"),
        ("qwen3", "qwen3"),
        ("llama3", "llama3"),
        ("gemma3", "gemma3"),
    ],
)
def test_family_is_detected_from_the_tokenizers_own_template(source: str, family: str) -> None:
    assert rf.renderer(source).family == family


def test_llama3_is_refused_for_a_qwen_template_and_qwen_for_the_llama3_template() -> None:
    for source, family in (("qwen3", "llama3"), ("llama3", "qwen3")):
        with pytest.raises(UnknownFamily):
            load_renderer(build_tiny_processor(source), family=family)


def test_gemma3_is_refused_for_a_qwen_template_and_qwen_for_the_gemma3_template() -> None:
    for source, family in (("qwen2_5_vl", "gemma3"), ("gemma3", "qwen2_vl"), ("gemma3", "llama3")):
        with pytest.raises(UnknownFamily):
            load_renderer(build_tiny_processor(source), family=family)


def test_gemma3_image_is_the_processors_expansion_framed_by_its_markers() -> None:
    renderer = rf.renderer("gemma3")
    rendered = renderer.render([user_with({"type": "text", "text": " look "}, image(1), image(2))])
    assert renderer.template_text(rendered.messages) == (
        "<bos><start_of_turn>user\nlook<start_of_image><start_of_image><end_of_turn>\n"
    )
    soft = renderer.tokenizer.image_token
    run = "\n\n<start_of_image>" + soft * 4 + "<end_of_image>\n\n"
    assert renderer.tokenizer.decode(list(rendered.token_ids)) == (
        f"<bos><start_of_turn>user\nlook{run}{run}<end_of_turn>\n"
    )
    assert [(i.length, i.descriptor.family) for i in rendered.images] == [(4, "gemma3"), (4, "gemma3")]
    assert rendered.images[0].descriptor.payload == {"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 4}
    assert renderer.render_model_input(renderer.to_model_input(rendered)).token_ids == rendered.token_ids
    assert renderer.vision_marker_ids == tuple(
        renderer.tokenizer.convert_tokens_to_ids(["<start_of_image>", "<end_of_image>"])
    )


@pytest.mark.parametrize("text", ["<start_of_image>", "a <image_soft_token> b", "<end_of_image>"])
def test_gemma3_image_tokens_inside_text_are_refused(text: str) -> None:
    with pytest.raises(PlaceholderMismatch):
        rf.renderer("gemma3").render([{"role": "user", "content": text}])


def test_tiny_model_names_load_like_folders() -> None:
    assert load_renderer("tiny:qwen3").family == "qwen3"


def test_a_family_that_does_not_reproduce_the_template_is_refused() -> None:
    with pytest.raises(UnknownFamily) as raised:
        load_renderer(build_tiny_processor("qwen3"), family="qwen2_vl")
    assert raised.value.field == "family"


def test_an_unknown_template_falls_back_to_generic(tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    folder.mkdir()
    for file in build_tiny_processor("qwen3").iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}: {{ m.content }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}"
    )
    renderer = load_renderer(folder)
    assert renderer.family == "generic"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    rendered = renderer.render(messages)
    expected = renderer.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    assert list(rendered.token_ids) == expected
    trained = renderer.tokenizer.decode([t for t, m in zip(rendered.token_ids, rendered.loss_mask, strict=True) if m])
    assert trained == " yo<|im_end|>"  # BPE merges the prompt's trailing space into " yo": it carries reply text
    pairs = list(zip(rendered.token_ids, rendered.message_indices, strict=True))
    owned = [renderer.tokenizer.decode([t for t, i in pairs if i == k]) for k in (0, 1)]
    assert owned == ["<|im_start|>user: hi<|im_end|>", "<|im_start|>assistant: yo<|im_end|>"]


def test_hand_written_families_never_call_the_chat_template(monkeypatch: pytest.MonkeyPatch) -> None:
    renderer = load_renderer(build_tiny_processor("qwen3_vl"), store=rf.store())

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("apply_chat_template called at render time")

    monkeypatch.setattr(renderer.tokenizer, "apply_chat_template", refuse)
    rendered = renderer.render([user_with(image(1), {"type": "text", "text": "hi"})], add_generation_prompt=True)
    assert len(rendered.images) == 1


@pytest.mark.parametrize(
    ("source", "messages", "tools", "field"),
    [
        ("qwen2_vl", [{"role": "user", "content": "q"}], [{"type": "function", "function": {"name": "f"}}], "tools"),
        (
            "qwen2_vl",
            [{"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]}],
            None,
            "messages[0].tool_calls",
        ),
        (
            "qwen2_vl",
            [{"role": "assistant", "content": "a", "reasoning_content": "r"}],
            None,
            "messages[0].reasoning_content",
        ),
        (
            "qwen3_vl",
            [{"role": "user", "content": "q"}, {"role": "system", "content": "late"}],
            None,
            "messages[1].role",
        ),
        (
            "qwen3_vl",
            [{"role": "assistant", "content": [{"type": "image", "image": b"x"}]}],
            None,
            "messages[0].content",
        ),
        ("qwen3", [user_with({"type": "image", "image": b"x"})], None, "messages[0].content"),
        ("qwen3", [{"role": "robot", "content": "x"}], None, "messages[0]"),
        ("qwen3", [], None, "messages"),
        ("llama3", [user_with({"type": "text", "text": "q"}, image(0))], None, "messages[0].content"),
        (
            "llama3",
            [{"role": "assistant", "content": "a", "reasoning_content": "r"}],
            None,
            "messages[0].reasoning_content",
        ),
        (
            "llama3",
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [{"name": "f"}] * 2}],
            None,
            "messages[1].tool_calls",
        ),
        (
            "llama3",
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "lost", "tool_calls": [{"name": "f"}]}],
            None,
            "messages[1].content",
        ),
        ("llama3", [{"role": "system", "content": "s"}], [{"type": "function", "function": {"name": "f"}}], "messages"),
        ("gemma3", [{"role": "user", "content": "q"}], [{"type": "function", "function": {"name": "f"}}], "tools"),
        ("gemma3", [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}], None, "messages[1].role"),
        ("gemma3", [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}], None, "messages[1].role"),
        ("gemma3", [{"role": "assistant", "content": "a"}], None, "messages[0].role"),
        ("gemma3", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], None, "messages[1].role"),
        ("gemma3", [{"role": "system", "content": "s"}], None, "messages"),
        (
            "gemma3",
            [{"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            None,
            "messages[0].content",
        ),
        (
            "gemma3",
            [{"role": "system", "content": [image(0)]}, {"role": "user", "content": "q"}],
            None,
            "messages[0].content",
        ),
        (
            "gemma3",
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]}],
            None,
            "messages[1].tool_calls",
        ),
        (
            "gemma3",
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}],
            None,
            "messages[1].reasoning_content",
        ),
        (
            "llama3",
            [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
            [{"type": "function", "function": {"name": "f"}}],
            "messages[1].role",
        ),
    ],
)
def test_content_a_template_would_drop_is_refused_naming_the_field(
    source: str, messages: list[Any], tools: Any, field: str
) -> None:
    with pytest.raises(InvalidMessage) as raised:
        rf.renderer(source).render(messages, tools)
    assert raised.value.field == field


def test_placeholder_tokens_inside_text_are_refused() -> None:
    with pytest.raises(PlaceholderMismatch):
        rf.renderer("qwen2_5_vl").render([{"role": "user", "content": "fake <|image_pad|> image"}])


def test_each_image_is_stored_once_and_described_by_its_layout() -> None:
    renderer = rf.renderer("qwen2_5_vl")
    sources = [image(4, kind) for kind in ("pil", "png_bytes", "data_url", "path", "file_uri")]
    rendered = renderer.render([user_with(*sources, image(6))])
    descriptors = [i.descriptor for i in rendered.images]
    assert len({d.hash for d in descriptors[1:5]}) == 1  # four forms of one PNG file: stored once, verbatim
    assert descriptors[0].hash != descriptors[1].hash  # the PIL image: a canonical PNG, stored bytes differ
    store = renderer.images.store
    pixels = [np.asarray(store.open_verified(d.raw_image_uri, d.hash)) for d in descriptors[:2]]
    assert np.array_equal(*pixels) and descriptors[0].payload == descriptors[1].payload
    assert descriptors[5].hash != descriptors[0].hash
    for item in rendered.images:
        assert Path(item.descriptor.raw_image_uri.removeprefix("file://")).is_file()
        assert item.length == item.descriptor.payload["num_placeholder_tokens"]
        assert set(rendered.token_ids[item.offset : item.offset + item.length]) == {renderer.image_token_id}


def test_a_stored_descriptor_is_accepted_and_checked() -> None:
    renderer = rf.renderer("qwen3_vl")
    first = renderer.render([user_with(image(3))]).images[0]
    again = renderer.render([user_with({"type": "image", "image": first.descriptor.model_dump()})])
    assert again.images == (first,)
    tampered = first.descriptor.model_copy(
        update={"payload": {"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 1}}
    )
    with pytest.raises(PlaceholderMismatch) as raised:
        renderer.render([user_with({"type": "image", "image": tampered})])
    assert raised.value.field == "messages[0].images[0].payload"


def test_a_descriptor_from_another_layout_is_refused() -> None:
    descriptor = rf.renderer("qwen2_5_vl").render([user_with(image(3))]).images[0].descriptor
    with pytest.raises(FingerprintMismatch):
        rf.renderer("qwen3_vl").render([user_with({"type": "image", "image": descriptor})])
    assert isinstance(descriptor, RawImageDescriptor)


def test_image_count_limit_names_the_messages() -> None:
    renderer = load_renderer(build_tiny_processor("qwen3_vl"), store=rf.store(), max_images=1)
    with pytest.raises(InvalidMessage) as raised:
        renderer.render([user_with(image(0), image(1))])
    assert raised.value.field == "messages"


@pytest.mark.parametrize("loss_on", ["assistant", "last_assistant", "all"])
def test_loss_modes(loss_on: str) -> None:
    renderer = rf.renderer("qwen3_vl")
    messages = [
        {"role": "user", "content": [image(0), {"type": "text", "text": "a"}]},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "second"},
    ]
    rendered = renderer.render(messages, loss_on=loss_on)
    trained = renderer.tokenizer.decode([t for t, m in zip(rendered.token_ids, rendered.loss_mask, strict=True) if m])
    expected = {
        "assistant": "first<|im_end|>second<|im_end|>",
        "last_assistant": "second<|im_end|>",
        "all": renderer.tokenizer.decode([t for t in rendered.token_ids if t != renderer.image_token_id]),
    }
    assert trained == expected[loss_on]
    assert not any(any(rendered.loss_mask[i.offset : i.offset + i.length]) for i in rendered.images)


def test_unknown_loss_mode_is_refused() -> None:
    with pytest.raises(InvalidMessage) as raised:
        rf.renderer("qwen3").render([{"role": "user", "content": "x"}], loss_on="everything")  # type: ignore[arg-type]
    assert raised.value.field == "loss_on"


def test_prefix_stability_is_declared_per_family() -> None:
    assert rf.renderer("qwen2_vl").prefix_stable
    assert not rf.renderer("qwen3_vl").prefix_stable
    assert not rf.renderer("qwen3").prefix_stable
    assert rf.renderer("llama3").prefix_stable and "first user message" in rf.renderer("llama3").prefix_note
    assert rf.renderer("gemma3").prefix_stable and "first user turn" in rf.renderer("gemma3").prefix_note
    assert rf.renderer("qwen2_5_vl", "generic").prefix_stable
    assert not rf.renderer("qwen3", "generic").prefix_stable
    for source in ("qwen2_vl", "qwen3_vl", "qwen3", "llama3", "gemma3"):
        assert "bridge" in rf.renderer(source).prefix_note


def test_generic_refuses_to_guess_the_mask_of_a_rewritten_turn() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": "r"},
        {"role": "user", "content": "q2"},
    ]
    with pytest.raises(InvalidMessage) as raised:
        rf.renderer("qwen3", "generic").render(messages)
    assert raised.value.field == "messages[1]"


def test_importing_the_renderer_pulls_in_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, foveal.renderers as r\n"
        "from foveal.renderers import Renderer, ModelInput, AssistantMessage, load_renderer\n"
        "import foveal.renderers.families, foveal.renderers.rendering, foveal.renderers.chunks\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_renderer_survives_pickling_for_spawned_data_loader_workers() -> None:
    renderer = rf.renderer("qwen3_vl")
    messages = [user_with(image(1, "png_bytes"), {"type": "text", "text": "x"})]
    clone = pickle.loads(pickle.dumps(renderer))
    assert clone.render(messages) == renderer.render(messages)


def test_a_refused_image_is_named_by_message_and_image_and_leaves_no_file(tmp_path: Path) -> None:
    import io

    from PIL import Image

    from foveal.renderers.errors import ContractError, DisallowedLocation

    renderer = rf.renderer("qwen2_5_vl")
    store = renderer.images.store
    before = set(store.root.rglob("*.*"))
    buffer = io.BytesIO()
    Image.new("RGB", (900, 3), "red").save(buffer, format="PNG")  # aspect ratio 300:1, past the layout's 200:1
    sliver = {"type": "image", "image": buffer.getvalue()}
    messages = [user_with(image(1)), {"role": "assistant", "content": "ok"}, user_with(image(2), sliver)]
    with pytest.raises(ContractError) as raised:
        renderer.render(messages)
    assert raised.value.field == "messages[2].images[1].aspect_ratio"
    assert f"image from {len(buffer.getvalue())} bytes" in str(raised.value)
    leftover = [p for p in set(store.root.rglob("*.*")) - before if Image.open(p).size == (900, 3)]
    assert leftover == []  # the layout check ran before the write: no orphan file

    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(buffer.getvalue())
    with pytest.raises(DisallowedLocation) as raised:
        renderer.render([user_with({"type": "image", "image": str(outside)})])
    assert raised.value.field == "messages[0].images[0].location.path"
    assert "image from a file named 'elsewhere.png'" in str(raised.value)
    url = "https://user:secret@example.com/a.png?token=abc"
    with pytest.raises(ContractError) as raised:
        renderer.render([user_with({"type": "image", "image": url})])
    assert "secret" not in str(raised.value) and "token=abc" not in str(raised.value)
    assert raised.value.field.startswith("messages[0].images[0].location")
