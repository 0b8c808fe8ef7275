"""The colors task: deterministic, answerable from the pixels alone and from nothing else, graded strictly;
and the blanking store that makes its blind control (same sizes, grey pixels)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.messages import AssistantMessage, ImagePart
from foveal.renderers.store import ImageStore
from foveal.verifiers.blind import BLANK_RGB, BlankingImageStore, run_image_store
from foveal.verifiers.datasets.colors import PALETTE, ColorsSpec, ColorsSpecError, generate_color_example
from foveal.verifiers.registry import load_environment
from foveal.verifiers.rollout import Rollout


def nearest_palette_colour(image: Image.Image) -> str:
    """The palette colour closest to the image's mean pixel: what any reader of the pixels would answer."""
    mean = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return min(PALETTE, key=lambda name: float(np.sum((mean - np.array(PALETTE[name])) ** 2)))


@pytest.mark.parametrize("spec", [ColorsSpec(), ColorsSpec(image_size=28, colors=8, noise=48), ColorsSpec(noise=0)])
def test_every_answer_is_what_the_pixels_show(spec: ColorsSpec) -> None:
    for split in ("train", "eval"):
        for index in range(60):
            example = generate_color_example(index, seed=3, split=split, spec=spec)
            assert example.image.size == (spec.image_size, spec.image_size) and example.image.mode == "RGB"
            assert example.color in spec.names
            assert nearest_palette_colour(example.image) == example.color


def test_examples_are_deterministic_noisy_and_the_splits_differ() -> None:
    first = generate_color_example(5, seed=1)
    again = generate_color_example(5, seed=1)
    assert first.color == again.color and first.image.tobytes() == again.image.tobytes()
    assert len(set(first.image.get_flattened_data())) > 100  # noise: not a flat fill
    train = [generate_color_example(i, split="train").image.tobytes() for i in range(20)]
    evals = [generate_color_example(i, split="eval").image.tobytes() for i in range(20)]
    assert not set(train) & set(evals)


def test_the_answers_spread_over_the_colours_and_the_text_says_nothing() -> None:
    environment = load_environment("colors", num_train=600, num_eval=2)
    rows = list(environment.dataset("train"))
    answers = [row.answer for row in rows]
    counts = [answers.count(name) for name in ColorsSpec().names]
    assert len(counts) == 6 and min(counts) > 600 / 6 * 0.7  # near uniform: chance is 1/6
    texts = {tuple(part.text for part in row.prompt[-1].content if not isinstance(part, ImagePart)) for row in rows}
    assert texts == {("What color is this image?",)}


@pytest.mark.parametrize(
    ("field", "value"), [("image_size", 27), ("colors", 1), ("colors", 9), ("noise", -1), ("noise", 49)]
)
def test_bad_settings_are_refused_naming_the_field(field: str, value: int) -> None:
    with pytest.raises(ColorsSpecError, match=rf"^{field}: .*\(got {value}\)$"):
        ColorsSpec(**{field: value})


def test_the_rubric_takes_the_colour_word_alone() -> None:
    environment = load_environment("colors", num_train=1, num_eval=1)
    row = environment.dataset("eval")[0]

    def reward(reply: str) -> float:
        rollout = Rollout(environment="colors", example_id=row.example_id, sample_index=0, prompt=row.prompt,
                          completion=(AssistantMessage(content=reply),), answer=row.answer)  # fmt: skip
        return asyncio.run(environment.rubric.score(rollout)).reward

    other = next(name for name in PALETTE if name != row.answer)
    assert reward(row.answer) == 1.0 and reward(f" {row.answer.upper()}.") == 1.0
    assert reward(other) == 0.0 and reward(f"{row.answer} or {other}") == 0.0 and reward("") == 0.0


def test_the_blanking_store_hands_out_grey_images_of_the_stored_size(tmp_path: Path) -> None:
    config = MultimodalConfig(max_pixels=40 * 40)
    store = run_image_store(config, tmp_path, "blank")
    assert isinstance(store, BlankingImageStore)
    image = generate_color_example(0, spec=ColorsSpec(image_size=80)).image
    blank = store.put(image)
    assert not list(tmp_path.rglob("*.png"))[1:]  # only the grey image was written
    seen = ImageStore.from_config(config, tmp_path).put(image)
    assert (blank.width, blank.height) == (seen.width, seen.height) and blank.hash != seen.hash
    pixels = store.open_verified(blank.uri, blank.hash)
    assert pixels.size == (seen.width, seen.height) and set(pixels.get_flattened_data()) == {BLANK_RGB}
    assert store.put(blank.uri) == blank  # the grey image itself stays grey (the renderer stores it again)
    assert type(run_image_store(config, tmp_path)) is ImageStore
