"""Answer parsers: the documented spellings parse, the last answer wins, and nothing ever raises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foveal.verifiers.parsers import BoxedParser, MultipleChoiceParser, Parser, TaggedParser, normalize_answer

ANSWERS = st.text(alphabet=st.characters(blacklist_characters="<>{}\\", blacklist_categories=("Cs",)), min_size=1)
PROSE = st.text(alphabet=st.characters(blacklist_characters="<>{}\\", blacklist_categories=("Cs",)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer>red</answer>", "red"),
        ("I think <ANSWER> top left </ANSWER>.", "top left"),
        ("<answer>1</answer> wait, <answer>2</answer>", "2"),
        ("<answer>\nmulti\nline\n</answer>", "multi\nline"),
        ("no tags here", None),
        ("<answer>unclosed", None),
        ("<answer>   </answer>", None),
    ],
)
def test_tagged_parser(text: str, expected: str | None) -> None:
    assert TaggedParser().parse_answer(text) == expected


def test_tagged_parser_other_tag_and_bad_tag() -> None:
    assert TaggedParser("final").parse_answer("<answer>no</answer><final>yes</final>") == "yes"
    with pytest.raises(ValueError, match="tag"):
        TaggedParser("a b")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{1} then \boxed{ {x} + 2 }", "{x} + 2"),
        (r"\fbox{7}", "7"),
        (r"\boxed{never closed", None),
        (r"\boxed{3} and \boxed{unclosed", "3"),
        ("plain 42", None),
    ],
)
def test_boxed_parser(text: str, expected: str | None) -> None:
    assert BoxedParser().parse_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("The answer is (D).", "D"),
        ("answer: A", "A"),
        ("I pick **B** because", "B"),
        ("A) is wrong, so C) it is", "C"),
        ("The answer is A. Actually, the answer is C", "C"),
        ("A cat sat on the mat", None),
        ("the answer is a dog", None),
        ("E", None),
        ("", None),
    ],
)
def test_multiple_choice_parser(text: str, expected: str | None) -> None:
    assert MultipleChoiceParser().parse_answer(text) == expected


def test_multiple_choice_parser_rejects_bad_choices() -> None:
    assert MultipleChoiceParser("abcde").parse_answer("answer: E") == "E"
    for bad in ([], ["AB"], ["A", "a"], ["1"]):
        with pytest.raises(ValueError, match="choices"):
            MultipleChoiceParser(bad)


@given(ANSWERS, PROSE, PROSE)
def test_tagged_answer_round_trips_inside_any_prose(answer: str, before: str, after: str) -> None:
    parsed = TaggedParser().parse_answer(f"{before}<answer>{answer}</answer>{after}")
    assert parsed == (answer.strip() or None)


@given(ANSWERS, PROSE)
def test_boxed_answer_round_trips_and_the_last_box_wins(answer: str, before: str) -> None:
    assert BoxedParser().parse_answer(rf"{before}\boxed{{decoy}} \boxed{{{answer}}}") == (answer.strip() or None)


@given(st.text())
def test_parsers_never_raise(text: str) -> None:
    for parser in (Parser(), TaggedParser(), BoxedParser(), MultipleChoiceParser()):
        result = parser.parse_answer(text)
        assert result is None or isinstance(result, str)


@given(st.sampled_from("ABCD"), PROSE)
def test_explicit_choice_wins_over_earlier_prose(letter: str, prose: str) -> None:
    assert MultipleChoiceParser().parse_answer(f"{prose}\nThe answer is ({letter})") == letter


@pytest.mark.parametrize(
    ("text", "expected"),
    [("  Top   Left. ", "top left"), ('"Red"', "red"), ("$42$", "42"), ("3!", "3"), ("", "")],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected
