"""Synthetic arithmetic: text-only questions ("What is 37 + 58?") with integer answers.

Text rows mixed into a vision run keep a model's plain language skills exercised and exercise the
text-only path through renderer, server and trainer. Deterministic by `(seed, split, index)` like the
other generators; `max_operand` sets the difficulty.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from foveal.verifiers.datasets.shapes import SPLITS, Split

Operator = Literal["+", "-", "*"]
OPERATORS: tuple[Operator, ...] = ("+", "-", "*")


class ArithmeticSpecError(ValueError):
    """A generator setting that cannot work; names the field and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


@dataclass(frozen=True)
class Problem:
    """`left op right`, its question text and its answer; `example_id` is unique across seeds and splits."""

    example_id: str
    left: int
    operator: Operator
    right: int

    @property
    def question(self) -> str:
        return f"What is {self.left} {self.operator} {self.right}?"

    @property
    def answer(self) -> int:
        if self.operator == "+":
            return self.left + self.right
        if self.operator == "-":
            return self.left - self.right
        return self.left * self.right


def generate_problem(index: int, *, seed: int = 0, split: Split = "train", max_operand: int = 99) -> Problem:
    """Problem `index` of `split`: operands in 0..max_operand (multiplication keeps the right one below 13)."""
    if split not in SPLITS:
        raise ArithmeticSpecError("split", split, f"one of {list(SPLITS)}")
    if index < 0:
        raise ArithmeticSpecError("index", index, "a non-negative index")
    if max_operand < 1:
        raise ArithmeticSpecError("max_operand", max_operand, "at least 1")
    rng = random.Random(f"foveal.arithmetic:{seed}:{split}:{index}")
    operator = rng.choice(OPERATORS)
    left = rng.randint(0, max_operand)
    right = rng.randint(0, min(max_operand, 12) if operator == "*" else max_operand)
    return Problem(f"arithmetic-{seed}-{split}-{index:06d}", left, operator, right)
