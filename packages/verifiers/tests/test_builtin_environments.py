"""Environments by name: the built-ins, a package installed at test time, and clear errors for typos."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from foveal.configs.orchestrator import DEMO_ENVIRONMENT
from foveal.renderers.messages import ImagePart
from foveal.verifiers.dataset import DatasetError, Example
from foveal.verifiers.datasets import generate_example
from foveal.verifiers.datasets.arithmetic import ArithmeticSpecError, generate_problem
from foveal.verifiers.environment import Environment, SingleTurnEnv
from foveal.verifiers.registry import (
    EnvironmentArgumentError,
    EnvironmentNotFound,
    available_environments,
    load_environment,
)

BUILT_IN = ("arithmetic", "charts", "colors", "shapes")


def test_the_built_in_environments_are_registered_and_shapes_is_the_demo() -> None:
    assert set(BUILT_IN) <= set(available_environments())
    assert DEMO_ENVIRONMENT == "shapes"
    for name in BUILT_IN:
        environment = load_environment(name, num_train=3, num_eval=2)
        assert isinstance(environment, SingleTurnEnv) and environment.name == name
        assert len(environment.dataset("train")) == 3 and len(environment.dataset("eval")) == 2


@pytest.mark.parametrize("name", BUILT_IN)
def test_rows_are_deterministic_and_the_splits_differ(name: str) -> None:
    first = load_environment(name, num_eval=3, num_train=3)
    again = load_environment(name, num_eval=3, num_train=3)
    other_seed = load_environment(name, num_eval=3, num_train=3, seed=1)
    rows = [row_key(e) for e in first.dataset("eval")]
    assert rows == [row_key(e) for e in again.dataset("eval")]
    assert rows != [row_key(e) for e in first.dataset("train")]
    assert rows != [row_key(e) for e in other_seed.dataset("eval")]
    assert len({e.example_id for e in first.dataset("eval")} | {e.example_id for e in first.dataset("train")}) == 6


def row_key(example: Example) -> tuple[object, ...]:
    images = [p.image.tobytes() for m in example.prompt for p in m.images()]  # type: ignore[union-attr]
    return (example.example_id, tuple(m.text() for m in example.prompt), example.answer, tuple(images))


def test_shapes_rows_are_the_sft_demo_prompts() -> None:
    (row,) = load_environment("shapes", num_eval=1).dataset("eval").take(1)
    scene = generate_example(0, seed=0, split="eval")
    (user,) = row.prompt
    image, question = user.content  # type: ignore[misc]
    assert isinstance(image, ImagePart) and image.image.tobytes() == scene.image.tobytes()
    assert question.text == scene.question.text and row.answer == scene.question.answer
    assert row.info["question_kind"] == scene.question.kind and len(row.info["shapes"]) == len(scene.shapes)  # type: ignore[arg-type]


def test_arithmetic_answers_are_right_and_text_only() -> None:
    environment = load_environment("arithmetic", num_eval=50)
    for row in environment.dataset("eval"):
        left, operator, right = row.prompt[-1].text().removeprefix("What is ").removesuffix("?").split()
        assert int(row.answer) == eval(f"{int(left)} {operator} {int(right)}")  # noqa: S307 - digits and an operator
        assert not any(m.images() for m in row.prompt)
    assert {row.info["operator"] for row in environment.dataset("eval")} == {"+", "-", "*"}
    with pytest.raises(ArithmeticSpecError, match="max_operand"):
        generate_problem(0, max_operand=0)


def test_unknown_names_and_arguments_are_named() -> None:
    with pytest.raises(EnvironmentNotFound, match=r"'shapez'.*'shapes'"):
        load_environment("shapez")
    with pytest.raises(EnvironmentArgumentError, match=r"num_exmaples.*num_eval"):
        load_environment("shapes", num_exmaples=3)
    with pytest.raises(DatasetError, match="num_examples"):
        load_environment("shapes", num_eval=2).dataset("eval").take(3)


def test_an_installed_package_is_loaded_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution on sys.path with a `foveal.environments` entry point, exactly as pip would install it."""
    (tmp_path / "foveal_env_letters.py").write_text(
        textwrap.dedent(
            """
            from foveal.verifiers.dataset import Dataset, Example
            from foveal.verifiers.environment import SingleTurnEnv
            from foveal.verifiers.rewards import exact_match
            from foveal.verifiers.rubric import Rubric

            def load_environment(words=("cat", "horse")):
                rows = [
                    Example(example_id=w, prompt=[{"role": "user", "content": f"Letters in {w}?"}], answer=str(len(w)))
                    for w in words
                ]
                return SingleTurnEnv(name="letters", eval=Dataset.from_examples(rows), rubric=Rubric([exact_match]))
            """
        )
    )
    dist_info = tmp_path / "foveal_env_letters-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: foveal-env-letters\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[foveal.environments]\nletters = foveal_env_letters:load_environment\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    assert "letters" in available_environments()
    environment = load_environment("letters", words=["ox"])
    assert isinstance(environment, Environment)
    assert [(e.example_id, e.answer) for e in environment.dataset("eval")] == [("ox", "2")]
    with pytest.raises(DatasetError, match="train"):
        environment.dataset("train")
