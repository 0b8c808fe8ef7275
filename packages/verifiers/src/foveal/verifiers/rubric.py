"""`Rubric`: weighted reward functions that turn rollouts into rewards and per-function metrics.

A reward function is any sync or async callable; it declares the arguments it wants by name, from
`REWARD_ARGUMENTS` (the last reply as `completion`, the parser's `parsed` answer, the reference `answer`,
`prompt`, `info`, the whole `rollout`, ...), and returns a number. Group functions see all rollouts of one
prompt at once and return one number per rollout (e.g. rewarding the shortest correct reply of a group);
a group's rewards are what group-relative advantages are computed from.

The reward is the weighted sum; every function's raw value is kept as a metric, so weight 0 adds a
metric that does not train. A function that raises or returns something that is not a finite number
marks that rollout with a scoring error and scores it 0: a sum with a missing term would be a wrong
reward, and a bug in one reward function must not end a long run.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from foveal.verifiers.parsers import Parser
from foveal.verifiers.rollout import ErrorRecord, Rollout

RewardFunction = Callable[..., float | Awaitable[float]]
GroupRewardFunction = Callable[..., Sequence[float] | Awaitable[Sequence[float]]]
REWARD_ARGUMENTS = ("completion", "parsed", "answer", "prompt", "messages", "info", "rollout", "parser")
GROUP_ARGUMENTS = ("rollouts", "completions", "parsed", "answers", "parser")


class RubricError(ValueError):
    """A reward function the rubric cannot call: names the function and the offending parameter."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


@dataclass(frozen=True)
class _Term:
    name: str
    func: Callable[..., Any]
    weight: float
    wants: tuple[str, ...]
    group: bool


class Rubric:
    """Reward functions with weights; `parser` extracts the answer passed as `parsed`."""

    def __init__(
        self,
        funcs: Sequence[RewardFunction] = (),
        weights: Sequence[float] | None = None,
        *,
        parser: Parser | None = None,
    ) -> None:
        if weights is not None and len(weights) != len(funcs):
            raise RubricError("weights", list(weights), f"one weight per function ({len(funcs)})")
        self.parser = parser or Parser()
        self._terms: list[_Term] = []
        for func, weight in zip(funcs, weights if weights is not None else [1.0] * len(funcs)):
            self.add(func, weight)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(term.name for term in self._terms)

    def add(self, func: RewardFunction, weight: float = 1.0, name: str | None = None) -> Rubric:
        """Add a per-rollout reward function; returns the rubric, so additions chain."""
        return self._add(func, weight, name, group=False)

    def add_group(self, func: GroupRewardFunction, weight: float = 1.0, name: str | None = None) -> Rubric:
        """Add a function of a whole group (arguments from `GROUP_ARGUMENTS`) returning one value per rollout."""
        return self._add(func, weight, name, group=True)

    async def score(self, rollout: Rollout) -> Rollout:
        """One rollout scored alone (a group of one)."""
        return (await self.score_group([rollout]))[0]

    async def score_group(self, rollouts: Sequence[Rollout]) -> list[Rollout]:
        """Every rollout of one prompt with `reward`, `metrics` and any scoring errors filled in."""
        live = [r for r in rollouts if not r.failed]
        values: dict[str, list[float | ErrorRecord]] = {}
        for term in self._terms:
            if term.group:
                values[term.name] = await self._group_values(term, live)
            else:
                values[term.name] = list(await asyncio.gather(*(self._value(term, r) for r in live)))
        positions = iter(range(len(live)))
        return [self._verdict(r, values, None if r.failed else next(positions)) for r in rollouts]

    # -- internals ------------------------------------------------------------------------------------

    def _add(self, func: Callable[..., Any], weight: float, name: str | None, *, group: bool) -> Rubric:
        label = name or getattr(func, "__name__", type(func).__name__)
        if not callable(func):
            raise RubricError(f"reward function {label!r}", func, "a callable")
        if not math.isfinite(weight):
            raise RubricError(f"weights[{label!r}]", weight, "a finite number")
        if label in self.names or label == "reward":
            raise RubricError("name", label, "a name not already used by another function (and not 'reward')")
        wants = _wanted(func, label, GROUP_ARGUMENTS if group else REWARD_ARGUMENTS)
        self._terms.append(_Term(label, func, float(weight), wants, group))
        return self

    async def _value(self, term: _Term, rollout: Rollout) -> float | ErrorRecord:
        completion = rollout.last_reply()
        available = {
            "completion": completion,
            "parsed": self.parser.parse_answer(completion),
            "answer": rollout.answer,
            "prompt": rollout.prompt,
            "messages": rollout.completion,
            "info": rollout.info,
            "rollout": rollout,
            "parser": self.parser,
        }
        return await _call(term, {key: available[key] for key in term.wants}, _number)

    async def _group_values(self, term: _Term, rollouts: list[Rollout]) -> list[float | ErrorRecord]:
        if not rollouts:
            return []
        completions = [r.last_reply() for r in rollouts]
        available = {
            "rollouts": list(rollouts),
            "completions": completions,
            "parsed": [self.parser.parse_answer(c) for c in completions],
            "answers": [r.answer for r in rollouts],
            "parser": self.parser,
        }
        result = await _call(term, {key: available[key] for key in term.wants}, _numbers(len(rollouts)))
        return [result] * len(rollouts) if isinstance(result, ErrorRecord) else list(result)

    def _verdict(self, rollout: Rollout, values: dict[str, list[float | ErrorRecord]], index: int | None) -> Rollout:
        metrics = dict(rollout.metrics)
        errors = list(rollout.errors)
        reward = 0.0
        for term in self._terms:
            value = values[term.name][index] if index is not None else 0.0
            if isinstance(value, ErrorRecord):
                errors.append(value)
                value = 0.0
            metrics[term.name] = value
            reward += term.weight * value
        if errors:
            reward = 0.0
        return rollout.model_copy(update={"reward": reward, "metrics": metrics, "errors": tuple(errors)})


def _wanted(func: Callable[..., Any], label: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """The known arguments `func` takes by name (all of them for **kwargs); any other required one is an error."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        raise RubricError(f"reward function {label!r}", func, "a callable with an inspectable signature") from None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return known
    wants = []
    for p in parameters:
        if p.name in known and p.kind is not inspect.Parameter.POSITIONAL_ONLY:
            wants.append(p.name)
        elif p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_POSITIONAL:
            raise RubricError(f"reward function {label!r}.{p.name}", p.name, f"a parameter named one of {list(known)}")
    return tuple(wants)


async def _call(term: _Term, kwargs: dict[str, Any], check: Callable[[str, Any], Any]) -> Any:
    """The function's checked result, or an ErrorRecord when it raises or returns a bad value."""
    try:
        result = term.func(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return check(term.name, result)
    except Exception as error:  # noqa: BLE001 - a failing reward function scores its rollout 0, it never ends the run
        return ErrorRecord.from_exception("scoring", error)


def _number(name: str, value: Any) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value):  # bools count as 0/1
        raise RubricError(f"reward function {name!r}", value, "a finite number")
    return float(value)


def _numbers(count: int) -> Callable[[str, Any], list[float]]:
    def check(name: str, values: Any) -> list[float]:
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) != count:
            raise RubricError(f"group reward function {name!r}", values, f"a sequence of {count} numbers")
        return [_number(name, value) for value in values]

    return check
