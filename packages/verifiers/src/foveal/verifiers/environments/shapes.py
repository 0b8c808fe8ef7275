"""`shapes`: one image of coloured shapes, one question about colour, count or position, graded exactly.

The prompt is the one the SFT demo trains on (image, then question; the family's default system turn),
so a model fine-tuned with `foveal sft` on the shapes demo is evaluated on the format it learned. The
reward is an exact match of the whole reply with the one- or two-word answer.
"""

from __future__ import annotations

from functools import partial

from foveal.verifiers.dataset import Dataset, Example, Split
from foveal.verifiers.datasets.shapes import ShapesSpec, generate_example
from foveal.verifiers.environment import SingleTurnEnv
from foveal.verifiers.parsers import Parser
from foveal.verifiers.rewards import answer_mentioned, exact_match
from foveal.verifiers.rubric import Rubric


def load_environment(
    *,
    num_train: int = 2048,
    num_eval: int = 256,
    seed: int = 0,
    image_size: int = 112,
    min_shapes: int = 1,
    max_shapes: int = 4,
    system_prompt: str | None = None,
) -> SingleTurnEnv:
    """The shapes environment; the eval split draws different scenes from the train split."""
    spec = ShapesSpec(image_size=image_size, min_shapes=min_shapes, max_shapes=max_shapes)

    def split(name: Split, size: int) -> Dataset:
        return Dataset(size, partial(shapes_example, seed=seed, split=name, spec=spec, system=system_prompt))

    rubric = Rubric(parser=Parser()).add(exact_match).add(answer_mentioned, weight=0.0)
    train, evals = split("train", num_train), split("eval", num_eval)
    return SingleTurnEnv(name="shapes", train=train, eval=evals, rubric=rubric)


def shapes_example(
    index: int, *, seed: int, split: Split, spec: ShapesSpec = ShapesSpec(), system: str | None = None
) -> Example:
    """Row `index` of a split: the scene's image and question, its answer, and what the scene holds."""
    scene = generate_example(index, seed=seed, split=split, spec=spec)
    user = scene.messages()[0]
    prompt = [{"role": "system", "content": system}, user] if system is not None else [user]
    info = {
        "question_kind": scene.question.kind,
        "shapes": [{"kind": s.kind, "color": s.color, "position": s.position} for s in scene.shapes],
    }
    return Example(example_id=scene.example_id, prompt=prompt, answer=scene.question.answer, info=info)
