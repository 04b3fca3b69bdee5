"""Multiplication with partial products: exact lines, correct annotations, knobs, determinism."""

import re

import pytest

from tinygrad_reason.data import records_digest
from tinygrad_reason.data.multiplication import generate_multiplication, multiplication_steps
from tinygrad_reason.grading.safe_eval import find_annotations


def test_spec_example_exact():
    assert multiplication_steps(347, 26) == [
        "347 x 6 = <<347*6=2082>>2082",
        "347 x 20 = <<347*20=6940>>6940",
        "2082 + 6940 = <<2082+6940=9022>>9022",
    ]


def test_zero_digits_skipped_and_single_partial():
    assert multiplication_steps(347, 105) == [
        "347 x 5 = <<347*5=1735>>1735",
        "347 x 100 = <<347*100=34700>>34700",
        "1735 + 34700 = <<1735+34700=36435>>36435",
    ]
    assert multiplication_steps(12, 300) == ["12 x 300 = <<12*300=3600>>3600"]
    assert multiplication_steps(12, 7) == ["12 x 7 = <<12*7=84>>84"]
    with pytest.raises(ValueError):
        multiplication_steps(0, 5)


def test_generated_records_are_correct():
    recs = generate_multiplication(2000, seed=0, min_digits_a=1, max_digits_a=5,
                                   min_digits_b=1, max_digits_b=4)
    for r in recs:
        a, b = r.meta["a"], r.meta["b"]
        assert r.question == f"What is {a} x {b}?"
        assert r.answer == str(a * b)
        nz = sum(ch != "0" for ch in str(b))
        assert len(r.steps) == r.meta["n_steps"] == nz + (nz - 1)
        anns = [x for s in r.steps for x in find_annotations(s)]
        assert len(anns) == len(r.steps) and all(x.ok for x in anns)
        assert anns[-1].claimed == r.answer
        # the partial products are a times each non-zero digit's place value
        partials = [int(x.claimed) for x in anns[:nz]]
        assert sum(partials) == a * b
        assert all(p % a == 0 and re.fullmatch(r"[1-9]0*", str(p // a)) for p in partials)
        assert 1 <= len(str(a)) <= 5 and 1 <= len(str(b)) <= 4


def test_digit_knobs():
    recs = generate_multiplication(500, seed=1, min_digits_a=3, max_digits_a=3,
                                   min_digits_b=2, max_digits_b=2)
    assert {len(str(r.meta["a"])) for r in recs} == {3}
    assert {len(str(r.meta["b"])) for r in recs} == {2}
    recs = generate_multiplication(500, seed=1, min_digits_a=1, max_digits_a=4)
    assert {len(str(r.meta["a"])) for r in recs} == {1, 2, 3, 4}
    with pytest.raises(ValueError):
        generate_multiplication(1, 0, min_digits_a=3, max_digits_a=2)
    with pytest.raises(ValueError):
        generate_multiplication(1, 0, min_digits_b=0)


def test_determinism():
    assert records_digest(generate_multiplication(300, 5)) == records_digest(generate_multiplication(300, 5))
    assert records_digest(generate_multiplication(300, 5)) != records_digest(generate_multiplication(300, 6))
