"""`colors`: one image of one noisy colour, "What color is this image?", graded by exact match of the reply.

The environment for checking that images reach the policy: every prompt has the same text, so a model that
does not see scores chance (1 / colors) at best, while the colour is plain to any model that sees (see
`datasets/colors.py`). The RL main job learns it from pixels and runs a blind control beside it.
"""

from __future__ import annotations

from functools import partial

from foveal.verifiers.dataset import Dataset, Example, Split
from foveal.verifiers.datasets.colors import QUESTION, ColorsSpec, generate_color_example
from foveal.verifiers.environment import SingleTurnEnv
from foveal.verifiers.parsers import Parser
from foveal.verifiers.rewards import answer_mentioned, exact_match
from foveal.verifiers.rubric import Rubric


def load_environment(
    *,
    num_train: int = 4096,
    num_eval: int = 256,
    seed: int = 0,
    image_size: int = 56,
    colors: int = 6,
    noise: int = 24,
    system_prompt: str | None = None,
) -> SingleTurnEnv:
    """The colors environment; the eval split draws different images from the train split."""
    spec = ColorsSpec(image_size=image_size, colors=colors, noise=noise)

    def split(name: Split, size: int) -> Dataset:
        return Dataset(size, partial(colors_example, seed=seed, split=name, spec=spec, system=system_prompt))

    rubric = Rubric(parser=Parser()).add(exact_match).add(answer_mentioned, weight=0.0)
    return SingleTurnEnv(name="colors", train=split("train", num_train), eval=split("eval", num_eval), rubric=rubric)


def colors_example(
    index: int, *, seed: int, split: Split, spec: ColorsSpec = ColorsSpec(), system: str | None = None
) -> Example:
    """Row `index` of a split: the image and the question, the colour as the answer."""
    drawn = generate_color_example(index, seed=seed, split=split, spec=spec)
    user = {"role": "user", "content": [{"type": "image", "image": drawn.image}, {"type": "text", "text": QUESTION}]}
    prompt = [{"role": "system", "content": system}, user] if system is not None else [user]
    return Example(example_id=drawn.example_id, prompt=prompt, answer=drawn.color, info={"colors": spec.colors})
