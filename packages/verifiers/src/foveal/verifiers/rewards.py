"""Reward functions the built-in environments share; any rubric can use them.

Each takes the arguments a `Rubric` passes by name and returns 0.0 or 1.0.
"""

from __future__ import annotations

import re

from foveal.verifiers.parsers import normalize_answer


def exact_match(parsed: str | None, answer: str) -> float:
    """1.0 when the parsed answer equals the reference after normalization (case, spaces, punctuation)."""
    return float(parsed is not None and normalize_answer(parsed) == normalize_answer(answer))


def answer_mentioned(completion: str, answer: str) -> float:
    """1.0 when the reference appears in the reply as whole words (a lenient metric, not a reward)."""
    wanted = normalize_answer(answer)
    if not wanted:
        return 0.0
    return float(re.search(rf"(?<!\w){re.escape(wanted)}(?!\w)", normalize_answer(completion)) is not None)


def has_answer(parsed: str | None) -> float:
    """1.0 when the parser found an answer at all (the reply followed the requested format)."""
    return float(parsed is not None)
