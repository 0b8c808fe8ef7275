"""`arithmetic`: text-only integer arithmetic with the answer between `<answer>` tags.

For mixed text + vision runs. The reward is the exact integer; a weight-0 `has_answer` metric shows
whether replies follow the tag format at all.
"""

from __future__ import annotations

from functools import partial

from foveal.verifiers.dataset import Dataset, Example, Split
from foveal.verifiers.datasets.arithmetic import generate_problem
from foveal.verifiers.environment import SingleTurnEnv
from foveal.verifiers.parsers import TaggedParser
from foveal.verifiers.rewards import exact_match, has_answer
from foveal.verifiers.rubric import Rubric

PARSER = TaggedParser("answer")
SYSTEM_PROMPT = f"Solve the problem. {PARSER.format_instruction()}"


def load_environment(
    *,
    num_train: int = 4096,
    num_eval: int = 256,
    seed: int = 0,
    max_operand: int = 99,
    system_prompt: str = SYSTEM_PROMPT,
) -> SingleTurnEnv:
    """The arithmetic environment; the eval split draws different problems from the train split."""

    def split(name: Split, size: int) -> Dataset:
        row = partial(arithmetic_example, seed=seed, split=name, max_operand=max_operand, system=system_prompt)
        return Dataset(size, row)

    rubric = Rubric(parser=PARSER).add(exact_match).add(has_answer, weight=0.0)
    train, evals = split("train", num_train), split("eval", num_eval)
    return SingleTurnEnv(name="arithmetic", train=train, eval=evals, rubric=rubric)


def arithmetic_example(
    index: int, *, seed: int, split: Split, max_operand: int = 99, system: str = SYSTEM_PROMPT
) -> Example:
    problem = generate_problem(index, seed=seed, split=split, max_operand=max_operand)
    prompt = [{"role": "system", "content": system}, {"role": "user", "content": problem.question}]
    info = {"operator": problem.operator}
    return Example(example_id=problem.example_id, prompt=prompt, answer=str(problem.answer), info=info)
