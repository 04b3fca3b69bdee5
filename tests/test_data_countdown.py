"""Countdown: generated problems are solvable; the checker takes any correct expression and
rejects wrong or illegal ones."""

import time
from fractions import Fraction

import pytest

from tinygrad_reason.data import records_digest
from tinygrad_reason.data.countdown import check_countdown, generate_countdown
from tinygrad_reason.grading.safe_eval import find_annotations


def _all_solutions(numbers, target, limit=200):
    """Independent brute force: every expression reachable by combining pairs under the rules."""
    found = []

    def rec(pool):
        if len(found) >= limit:
            return
        for v, e in pool:
            if v == target:
                found.append(e)
        for i in range(len(pool)):
            for j in range(len(pool)):
                if i == j:
                    continue
                (a, ea), (b, eb) = pool[i], pool[j]
                rest = [x for k, x in enumerate(pool) if k not in (i, j)]
                cands = [(a + b, f"({ea}) + ({eb})"), (a * b, f"({ea}) * ({eb})")]
                if a > b:
                    cands.append((a - b, f"({ea}) - ({eb})"))
                if b and a % b == 0:
                    cands.append((a // b, f"({ea}) / ({eb})"))
                for v, e in cands:
                    rec(rest + [(v, e)])

    rec([(n, str(n)) for n in numbers])
    return found


@pytest.fixture(scope="module")
def recs():
    return generate_countdown(2000, seed=0)


def test_generated_are_solvable_and_checked(recs):
    for r in recs:
        nums, target = r.meta["numbers"], r.meta["target"]
        assert check_countdown(nums, target, r.answer), r
        assert 10 <= target <= 200 and target not in nums
        assert len(nums) == 4 and all(1 <= x <= 25 for x in nums)
        assert str(target) in r.question and all(str(x) in r.question for x in nums)
        assert r.meta["n_steps"] == len(r.steps) == r.meta["n_used"] - 1
        for s in r.steps:
            (a,) = find_annotations(s)
            assert a.ok and a.value.denominator == 1 and a.value > 0
        assert list(find_annotations(r.steps[-1]))[0].value == target


def test_generator_uses_all_operations(recs):
    text = " ".join(r.answer for r in recs)
    for op in "+-*/":
        assert text.count(f" {op} ") > 100
    assert {r.meta["n_used"] for r in recs} == {3, 4}


def test_checker_accepts_alternative_solutions():
    nums, target = [1, 2, 3, 4], 10
    for e in ["1+2+3+4", "4*3-2*1", "(4+1)*2", "2*(1+4)", "4 x 3 - 2", "4*2+3-1", "4*3-(2*1)", "(2*4+3)-1",
              "((1+2)+3)+4", " 4 * 3 - 2 "]:
        assert check_countdown(nums, target, e), e
    # a brute force finds many solutions to generated problems; the checker takes them all
    for r in generate_countdown(25, seed=4, n_numbers=4):
        sols = _all_solutions(r.meta["numbers"], r.meta["target"], limit=40)
        assert sols
        for e in sols:
            assert check_countdown(r.meta["numbers"], r.meta["target"], e), (r.meta, e)


@pytest.mark.parametrize("numbers, target, expr", [
    ([1, 2, 3, 4], 10, "1+2+3"),          # wrong value
    ([1, 2, 3, 4], 10, "5+5"),            # numbers not given
    ([1, 2, 3, 4], 10, "4+4+2"),          # 4 used twice
    ([5, 2], 10, "5+5"),                   # 5 given once
    ([1, 2, 3, 4], 6, "3/2*4"),           # 3/2 is not an integer
    ([1, 2, 3, 4], 4, "(1-3)*(2-4)"),     # negative intermediates
    ([3, 3, 7], 7, "(3-3)+7"),            # zero intermediate
    ([2, 12], 10, "-2+12"),               # unary minus
    ([2, 5], 10, "2.0*5"),                # decimal literal
    ([2, 5], 10, "2*5.0"),
    ([2, 5], 10, "2**5"),
    ([2, 5], 10, "__import__('os')"),
    ([2, 5], 10, ""),
    ([2, 5], 10, "2*5)"),
    ([2, 5], 10, "10"),                   # 10 is not given
    ([2, 5, 0], 10, "2*5/0"),
    ([2, 5], 10, "2 5"),
])
def test_checker_rejects(numbers, target, expr):
    assert not check_countdown(numbers, target, expr)


def test_checker_multiplicity_and_bad_input():
    assert check_countdown([5, 5, 2], 10, "5+5")
    assert check_countdown([5, 5, 2], 12, "5+5+2")
    assert not check_countdown([5, 5, 2], 15, "5+5+5")
    assert check_countdown([7], 7, "7")                    # a single given number is fine
    assert not check_countdown([1, 2], 3, None)
    assert not check_countdown([1, 2], 3, 3)
    assert not check_countdown(None, 3, "1+2")
    t = time.perf_counter()
    assert not check_countdown([1, 2], 3, "1+" * 500_000 + "2")
    assert time.perf_counter() - t < 0.05


def test_knobs_and_determinism():
    recs = generate_countdown(300, seed=2, n_numbers=6, max_number=100, min_used=5,
                              min_target=100, max_target=999)
    for r in recs:
        assert len(r.meta["numbers"]) == 6 and r.meta["n_used"] >= 5
        assert 100 <= r.meta["target"] <= 999
        assert check_countdown(r.meta["numbers"], r.meta["target"], r.answer)
    a, b = generate_countdown(200, seed=9), generate_countdown(200, seed=9)
    assert records_digest(a) == records_digest(b)
    assert records_digest(a) != records_digest(generate_countdown(200, seed=10))
    with pytest.raises(ValueError):
        generate_countdown(1, 0, n_numbers=3, min_used=4)
    with pytest.raises(ValueError):
        generate_countdown(1, 0, min_target=5000, max_target=5001, max_tries=50)


def test_exact_fraction_check_is_used():
    # 7/2*2 = 7 in exact arithmetic, but 7/2 is an illegal intermediate
    assert not check_countdown([7, 2, 2], 7, "7/2*2")
    assert check_countdown([7, 2, 2], 7, "7*2/2")
    assert Fraction(7, 2) * 2 == 7
