"""Countdown: reach a target from given numbers with + - * /.

Rules (both the generator and :func:`check_countdown` follow them): each given number is
used at most once (a number given twice may be used twice), only + - * / and parentheses,
and every intermediate result must be a positive integer (so ``/`` must divide exactly and
``-`` must leave something positive; unary minus is not allowed).

The generator guarantees solvability by building the target from a random expression
over a random subset of the numbers; that expression is the record's answer and its
combinations are the steps (``25 - 3 = <<25-3=22>>22``, ``22 * 4 = <<22*4=88>>88``).
The checker accepts *any* correct expression, not only the generator's.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Optional, Sequence

from .records import Record, derive_seed, make_rng
from ..grading.safe_eval import Neg, Num, apply_binop, parse

__all__ = ["generate_countdown", "check_countdown", "countdown_question"]

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def countdown_question(numbers: Sequence[int], target: int) -> str:
    nums = ", ".join(str(x) for x in numbers)
    return (f"Using the numbers {nums}, make {target}. You may use +, -, * and /, each number "
            f"at most once, and every intermediate result must be a positive whole number.")


def _wrap(expr: str, prec: int, op: str, right: bool) -> str:
    p = _PREC[op]
    if prec < p or (right and prec == p and op in "-/"):
        return f"({expr})"
    return expr


def _build(rng, chosen: list[int]):
    """Combine ``chosen`` pairwise into one value; returns (value, expr, steps)."""
    pool = [(v, str(v), 3) for v in chosen]
    steps: list[str] = []
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        (a, ea, pa), (b, eb, pb) = pool[i], pool[j]
        ops = ["+"]          # always possible; the others are favoured when possible
        if a > b:
            ops += ["-", "-"]
        if a > 1 and b > 1:
            ops += ["*", "*"]
        if b > 1 and a % b == 0:
            ops += ["/", "/", "/"]
        op = rng.choice(ops)
        r = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]
        expr = f"{_wrap(ea, pa, op, False)} {op} {_wrap(eb, pb, op, True)}"
        steps.append(f"{a} {op} {b} = <<{a}{op}{b}={r}>>{r}")
        pool = [x for k, x in enumerate(pool) if k not in (i, j)] + [(r, expr, _PREC[op])]
    return pool[0][0], pool[0][1], steps


def generate_countdown(
    n: int,
    seed: int,
    n_numbers: int = 4,
    max_number: int = 25,
    min_used: Optional[int] = None,
    max_used: Optional[int] = None,
    min_target: int = 10,
    max_target: int = 200,
    max_tries: int = 10_000,
) -> list[Record]:
    """``n`` solvable countdown problems, deterministic in ``seed`` and the knobs.

    ``n_numbers`` numbers are drawn from ``1..max_number`` (repeats allowed); the target is
    built from ``min_used..max_used`` of them (defaults: ``min(3, n_numbers)`` and all) and lies in
    ``[min_target, max_target]``; a target equal to one of the numbers is never produced.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    max_used = n_numbers if max_used is None else max_used
    min_used = min(3, max_used) if min_used is None else min_used
    if not 2 <= min_used <= max_used <= n_numbers:
        raise ValueError(f"need 2 <= min_used <= max_used <= n_numbers, got {min_used}, {max_used}, {n_numbers}")
    if max_number < 2 or not 1 <= min_target <= max_target:
        raise ValueError("need max_number >= 2 and 1 <= min_target <= max_target")
    rng = make_rng(derive_seed("countdown", seed))
    out = []
    for i in range(n):
        for _ in range(max_tries):
            numbers = [rng.randint(1, max_number) for _ in range(n_numbers)]
            k = rng.randint(min_used, max_used)
            chosen = rng.sample(numbers, k)
            target, expr, steps = _build(rng, chosen)
            if min_target <= target <= max_target and target not in numbers:
                break
        else:
            raise ValueError(f"no countdown problem found in {max_tries} tries; loosen the target range")
        nums = sorted(numbers)
        out.append(Record(
            question=countdown_question(nums, target), steps=steps, answer=expr,
            meta={"task": "countdown", "n_steps": len(steps), "numbers": nums, "target": target,
                  "n_used": k, "index": i,
                  "dedup_key": f"countdown:{','.join(map(str, nums))}->{target}"},
        ))
    return out


def check_countdown(numbers: Sequence[int], target: int, expression: str) -> bool:
    """True iff ``expression`` reaches ``target`` under the rules, using each given number at
    most as many times as it is given. Never raises on bad input; never uses ``eval``."""
    try:
        if not isinstance(expression, str):
            return False
        node = parse(expression)
        if node is None:
            return False
        allowed = Counter(int(x) for x in numbers)
        used: Counter = Counter()
        # iterative post-order walk; every BinOp value must be a positive integer
        values: dict[int, Fraction] = {}
        stack = [(node, False)]
        while stack:
            cur, done = stack.pop()
            if isinstance(cur, Neg):
                return False
            if isinstance(cur, Num):
                if not cur.is_integer_literal:
                    return False
                v = int(cur.value)
                used[v] += 1
                if used[v] > allowed[v]:
                    return False
                values[id(cur)] = cur.value
                continue
            if not done:
                stack.append((cur, True))
                stack.append((cur.right, False))
                stack.append((cur.left, False))
                continue
            r = apply_binop(cur.op, values.pop(id(cur.left)), values.pop(id(cur.right)))  # raises on /0
            if r.denominator != 1 or r <= 0:
                return False
            values[id(cur)] = r
        final = values[id(node)]
        return final == target
    except Exception:
        return False
