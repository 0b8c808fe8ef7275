"""Answer extraction: the part of a reply a rubric compares with the reference answer.

Replies are sampled, so parsing never raises: a reply with no recognisable answer parses to None and
scores 0. When a reply states several answers the last one counts (models restate or correct
themselves; "the answer is B ... no, C" means C).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_SPACES = re.compile(r"\s+")
_TRAILING = ".,;:!?。"


def normalize_answer(text: str) -> str:
    """Lowercase, whitespace collapsed, surrounding quotes, `$` and trailing punctuation removed."""
    text = _SPACES.sub(" ", text).strip().lower()
    text = text.strip("\"'`$ ")
    return text.rstrip(_TRAILING).strip()


class Parser:
    """The whole reply (stripped) is the answer; None for an empty reply. Subclasses look for markup."""

    def parse_answer(self, text: str) -> str | None:
        text = text.strip()
        return text or None


class TaggedParser(Parser):
    """The content of the last `<tag>...</tag>` (default `<answer>`), case-insensitive, across lines."""

    def __init__(self, tag: str = "answer") -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", tag):
            raise ValueError(f"tag: a plain XML name (got {tag!r})")
        self.tag = tag
        self._pattern = re.compile(rf"<{tag}>(.*?)</{tag}>", re.IGNORECASE | re.DOTALL)

    def parse_answer(self, text: str) -> str | None:
        found = self._pattern.findall(text)
        return (found[-1].strip() or None) if found else None

    def format_instruction(self) -> str:
        return f"Put your final answer between <{self.tag}> and </{self.tag}>."


class BoxedParser(Parser):
    r"""The content of the last `\boxed{...}` (or `\fbox{...}`), nested braces included; an unclosed box is None."""

    _OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")

    def parse_answer(self, text: str) -> str | None:
        starts = [m.end() for m in self._OPEN.finditer(text)]
        for start in reversed(starts):
            content = _balanced(text, start)
            if content is not None:
                return content.strip() or None
        return None


def _balanced(text: str, start: int) -> str | None:
    """The text from `start` up to the brace closing the one just before it, or None if never closed."""
    depth = 1
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start:index]
    return None


class MultipleChoiceParser(Parser):
    """The chosen letter among `choices`: "answer: (B)", "B)", "**B**", or a reply that is just the letter.

    A bare capital letter inside prose ("A cat") is not a choice; the explicit forms are tried first and
    the last explicit mention wins.
    """

    def __init__(self, choices: Sequence[str] = ("A", "B", "C", "D")) -> None:
        letters = [c.upper() for c in choices]
        if not letters or any(not re.fullmatch(r"[A-Z]", c) for c in letters) or len(set(letters)) != len(letters):
            raise ValueError(f"choices: distinct single letters A-Z (got {list(choices)!r})")
        self.choices = tuple(letters)
        group = "[" + "".join(letters) + "]"
        self._explicit = re.compile(
            rf"(?i:answer|choice|option)\s*(?:is|:)?\s*[:\-]?\s*[\(\[\*]*({group})(?![A-Za-z0-9'])"
        )
        self._marked = re.compile(rf"(?:\(({group})\)|\*\*({group})\*\*|(?<![A-Za-z])({group})\))")
        self._alone = re.compile(rf"[\s\(\[\*]*({group})[\s\)\]\*.:]*")

    def parse_answer(self, text: str) -> str | None:
        explicit = [m.group(1) for m in self._explicit.finditer(text)]
        if explicit:
            return explicit[-1]
        marked = [next(g for g in m.groups() if g) for m in self._marked.finditer(text)]
        if marked:
            return marked[-1]
        alone = self._alone.fullmatch(text)
        return alone.group(1) if alone else None
