"""grading/steps.py: the task's own step checker, the exact labels a process reward model learns."""
from __future__ import annotations

import pytest

from tinygrad_reason.data import make_splits
from tinygrad_reason.data.multiplication import given_numbers, place_values
from tinygrad_reason.grading.steps import STEP_BAD, STEP_NONE, STEP_OK, check_step, question_numbers, step_labels

Q = "Ivan's shop starts the week with 6 pens. A customer buys 2 cartons of 2 pens each. How many pens are left?"
RIGHT = ["The customer takes 2 * 2 = <<2*2=4>>4 pens.", "The shop is left with 6 - 4 = <<6-4=2>>2 pens."]


def test_a_right_solution_is_right_at_every_step():
    assert step_labels(Q, RIGHT) == [True, True]


@pytest.mark.parametrize("steps, want", [
    # a wrong operand: 5 is in neither the question nor an earlier result, though 5 - 4 = 1 is true
    ([RIGHT[0], "The shop is left with 5 - 4 = <<5-4=1>>1 pens."], [True, False]),
    # a wrong result, then a step that is right given it: still wrong (the path went astray)
    (["The customer takes 2 * 2 = <<2*2=5>>5 pens.", "The shop is left with 6 - 5 = <<6-5=1>>1 pens."],
     [False, False]),
    # the visible copy disagrees with the annotation
    (["The customer takes 2 * 2 = <<2*2=4>>5 pens.", RIGHT[1]], [False, False]),
    # an unclosed annotation, and a step with none (it cannot be checked)
    (["The customer takes 2 * 2 = <<2*2=4 pens.", RIGHT[1]], [False, False]),
    (["The customer takes four pens.", RIGHT[1]], [False, False]),
    # a result used before it was computed
    ([RIGHT[1], RIGHT[0]], [False, False]),
])
def test_the_first_wrong_step_and_all_after_it_are_wrong(steps, want):
    assert step_labels(Q, steps) == want


def test_operands_may_be_earlier_results_and_number_words():
    q = "Mia has 9 cards. She wins twice as many. Then she gives half of them away. How many are left?"
    steps = ["She has 9 * 2 = <<9*2=18>>18 cards.", "She keeps 18 / 2 = <<18/2=9>>9 cards.",
             "Negated: -9 + 18 = <<-9+18=9>>9."]
    assert question_numbers(q) == {9, 2}
    assert step_labels(q, steps) == [True, True, True]


def test_check_step():
    assert check_step(" 16 - 3 - 4 = <<16-3-4=9>>9 eggs. ") == STEP_OK
    assert check_step(" 16 - 3 - 4 = <<16-3-4=8>>8 eggs. ") == STEP_BAD
    assert check_step("no annotation") == STEP_NONE


@pytest.mark.parametrize("task", ["arithmetic", "multiplication", "countdown"])
def test_every_generated_solution_is_labelled_right(task):
    splits = make_splits(task, 300, 50, 50, seed=3)
    for split in ("train", "test", "ood"):
        for r in splits[split]:
            given = given_numbers(r) if task == "multiplication" else ()
            assert all(step_labels(r.question, r.steps, given)), (r.question, r.steps)


def test_multiplication_needs_its_place_values():
    assert place_values(2601) == [1, 600, 2000]
    records = make_splits("multiplication", 0, 20, 0, seed=0)["test"]
    r = next(r for r in records if len(place_values(int(r.meta["b"]))) >= 2 and int(r.meta["b"]) >= 10)
    assert all(step_labels(r.question, r.steps, given_numbers(r)))
    assert not all(step_labels(r.question, r.steps))          # 20 of 26 is not written in "a x 26"


def test_one_string_is_a_clear_error():
    with pytest.raises(TypeError, match="steps must be a list of step texts"):
        step_labels(Q, RIGHT[0])
