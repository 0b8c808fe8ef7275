"""`charts`: read a value off a bar or line chart, or say which of two categories is larger.

Answers are a number or a category label, graded by exact match of the whole reply.
"""

from __future__ import annotations

from functools import partial

from foveal.verifiers.dataset import Dataset, Example, Split
from foveal.verifiers.datasets.charts import ChartsSpec, generate_chart
from foveal.verifiers.environment import SingleTurnEnv
from foveal.verifiers.parsers import Parser
from foveal.verifiers.rewards import answer_mentioned, exact_match
from foveal.verifiers.rubric import Rubric

SYSTEM_PROMPT = "Answer with a single number or a single word."


def load_environment(
    *,
    num_train: int = 2048,
    num_eval: int = 256,
    seed: int = 0,
    width: int = 224,
    height: int = 168,
    max_value: int = 9,
    system_prompt: str | None = SYSTEM_PROMPT,
) -> SingleTurnEnv:
    """The charts environment; the eval split draws different charts from the train split."""
    spec = ChartsSpec(width=width, height=height, max_value=max_value)

    def split(name: Split, size: int) -> Dataset:
        return Dataset(size, partial(chart_example, seed=seed, split=name, spec=spec, system=system_prompt))

    rubric = Rubric(parser=Parser()).add(exact_match).add(answer_mentioned, weight=0.0)
    train, evals = split("train", num_train), split("eval", num_eval)
    return SingleTurnEnv(name="charts", train=train, eval=evals, rubric=rubric)


def chart_example(
    index: int, *, seed: int, split: Split, spec: ChartsSpec = ChartsSpec(), system: str | None = SYSTEM_PROMPT
) -> Example:
    chart = generate_chart(index, seed=seed, split=split, spec=spec)
    user = {
        "role": "user",
        "content": [{"type": "image", "image": chart.image}, {"type": "text", "text": chart.question.text}],
    }
    prompt = [{"role": "system", "content": system}, user] if system is not None else [user]
    info = {
        "chart": chart.kind,
        "question_kind": chart.question.kind,
        "labels": list(chart.labels),
        "values": list(chart.values),
    }
    return Example(example_id=chart.example_id, prompt=prompt, answer=chart.question.answer, info=info)
