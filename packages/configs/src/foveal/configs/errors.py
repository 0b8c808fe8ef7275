"""Configuration errors that name every problem by its dotted key, so a user fixes them all in one pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SECRET_MASK = "**********"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration: where (`key`), what was expected, and what was found."""

    key: str
    expected: str
    got: str | None = None

    def __str__(self) -> str:
        return f"{self.key}: {self.expected}" + ("" if self.got is None else f" (got {self.got})")

    def under(self, prefix: str) -> Problem:
        """The same problem with its key nested under `prefix` (a section's problem seen from the run)."""
        key = f"{prefix}.{self.key}" if prefix else self.key
        return Problem(key, self.expected, self.got)


class ConfigError(ValueError):
    """A configuration that cannot be used: the message has a summary line, then one problem per line."""

    def __init__(self, problems: Sequence[Problem], subject: str = "configuration") -> None:
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        self.problems = tuple(problems)
        self.subject = subject
        count = f"{len(self.problems)} problem" + ("s" if len(self.problems) > 1 else "")
        lines = [f"invalid {subject} ({count}):", *(f"  {problem}" for problem in self.problems)]
        super().__init__("\n".join(lines))


class IncompatibleSettings(ValueError):
    """Raised by a model validator for values that are each valid but impossible together.

    It carries structured problems (keys relative to the validating model) so that loading can report
    them under their full dotted path instead of pydantic's flattened message.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))


def preview(value: object, limit: int = 80) -> str:
    """A short, secret-free rendering of an offending value: tables show their keys only."""
    if isinstance(value, dict):
        return f"a table with keys {sorted(map(str, value))}"
    if isinstance(value, list | tuple) and any(isinstance(item, dict | list | tuple) for item in value):
        return f"a list of {len(value)} items"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class UsageError(Exception):
    """A malformed command line; the CLI prints it as one line and exits with status 2."""


class RunError(Exception):
    """A predictable run-time error the user can fix (a run folder that exists, a key that is not set, a checkpoint
    that cannot be resumed): `foveal` prints its message as one line naming what to change and exits with
    status 1; `foveal --debug <command>` shows the traceback instead. Each package's such errors subclass it."""
