"""Dataset rows and splits: what an environment samples prompts from.

An `Example` is a prompt (typed chat messages, text and images), the reference answer the rubric compares
against, and free-form `info` (JSON) for reward functions. A `Dataset` is one split, built on demand by
index, so a generated split of any size costs nothing until a row is read and every row can be
regenerated alone from its index (what makes seeded environments deterministic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal, overload

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from foveal.renderers.messages import Message

Split = Literal["train", "eval"]
SPLITS: tuple[Split, ...] = ("train", "eval")


class DatasetError(ValueError):
    """A dataset request that cannot be served (unknown split, index out of range); names field and value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


class Example(BaseModel):
    """One dataset row: prompt messages, the reference answer, and JSON `info` for reward functions."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    example_id: str = Field(min_length=1, max_length=256)
    prompt: tuple[Message, ...] = Field(min_length=1)
    answer: str = ""
    info: dict[str, JsonValue] = Field(default_factory=dict)


class Dataset(Sequence[Example]):
    """One split: `size` rows, row `i` built by `build(i)` when read (nothing is cached)."""

    def __init__(self, size: int, build: Callable[[int], Example]) -> None:
        if size < 0:
            raise DatasetError("size", size, "a non-negative number of rows")
        self._size = size
        self._build = build

    @classmethod
    def from_examples(cls, examples: Sequence[Example]) -> Dataset:
        rows = tuple(examples)
        return cls(len(rows), rows.__getitem__)

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> Example: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Example]: ...
    def __getitem__(self, index: int | slice) -> Example | Sequence[Example]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._size))]
        if not -self._size <= index < self._size:
            raise IndexError(f"index {index} out of range for a dataset of {self._size} rows")
        return self._build(index % self._size)

    def __iter__(self) -> Iterator[Example]:
        return (self._build(i) for i in range(self._size))

    def take(self, count: int) -> list[Example]:
        """The first `count` rows; asking for more rows than the split holds is an error, not a silent cut."""
        if not 0 <= count <= self._size:
            raise DatasetError("num_examples", count, f"between 0 and the split's {self._size} rows")
        return [self._build(i) for i in range(count)]
