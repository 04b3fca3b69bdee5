"""grading/rewards.py: the one definition of a correct answer and of a well-formed completion."""
from __future__ import annotations

import pytest

from tinygrad_reason.grading.rewards import (canonical_answer, correctness_reward, format_ok, format_reward,
                                             is_correct, is_exact_number)


def test_canonical_answers():
    assert canonical_answer(" 12 ") == canonical_answer("12.0") == canonical_answer("24/2") == "12"
    assert canonical_answer("1,000") == "1000" and canonical_answer("0.5") == canonical_answer("1/2")
    assert canonical_answer("12 apples") == "12"          # the grader's normalization drops unit words
    assert canonical_answer("") is None and canonical_answer(None) is None


@pytest.mark.parametrize("predicted, reference, expected", [
    ("4.0", "4", True), ("8/2", "4", True), ("04", "4", True), (" 1,234 ", "1234", True), (4, "4", True),
    ("5", "4", False), (None, "4", False), ("", "4", False), ("4", None, False),
    ("-3", "3", False), ("0.50", "1/2", True),
])
def test_numbers_are_decided_exactly(predicted, reference, expected):
    assert is_correct(predicted, reference) is expected
    assert correctness_reward(predicted, reference) == float(expected)


def test_numbers_never_reach_the_sympy_grader(monkeypatch):
    from tinygrad_reason.grading import grader
    monkeypatch.setattr(grader, "grade", lambda *a, **k: pytest.fail("the sympy grader was called"))
    assert is_correct("4.0", "4") and not is_correct("5", "4") and is_exact_number("4") and not is_exact_number("x")


def test_expressions_go_to_the_sympy_grader():
    assert is_correct("\\frac{1}{2}", "0.5")
    assert is_correct("x + 1", "1 + x")
    assert not is_correct("x + 2", "1 + x")


DIRECT, COT = "direct", "cot"


@pytest.mark.parametrize("text, fmt, ok", [
    (" 42<|endoftext|>", DIRECT, True),
    (" 42", DIRECT, False),                                            # never ended
    ("<|endoftext|>", DIRECT, False),                                  # no answer
    (" 4<|step|> 2<|endoftext|>", DIRECT, False),                     # steps in a direct answer
    (" 3 + 4 = 7.<|step|><|answer|> 7<|endoftext|>", COT, True),
    (" a.<|step|> b.<|step|><|answer|> 7<|endoftext|>", COT, True),
    ("<|answer|> 7<|endoftext|>", COT, False),                        # no step
    (" a.<|step|><|answer|><|endoftext|>", COT, False),                # empty answer
    (" a.<|step|><|answer|> 7<|answer|> 8<|endoftext|>", COT, False),  # two answers
    (" a.<|step|><|answer|> 7", COT, False),                           # truncated
    (" a.<|step|> b<|answer|> 7<|endoftext|>", COT, False),            # the last step never ended
    (" a.<|step|><|answer|> 7<|endoftext|> more", COT, False),         # text after the end
])
def test_format_reward(text, fmt, ok):
    assert format_ok(text, fmt) is ok and format_reward(text, fmt) == float(ok)


def test_format_reward_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="format_ok: unknown format 'json'"):
        format_ok("x", "json")
