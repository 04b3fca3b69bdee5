"""Multi-digit multiplication with a partial-products chain of thought.

``347 x 26`` gives the steps::

    347 x 6 = <<347*6=2082>>2082
    347 x 20 = <<347*20=6940>>6940
    2082 + 6940 = <<2082+6940=9022>>9022

One partial product per non-zero digit of ``b`` (lowest digit first), then a running sum.
When ``b`` has a single non-zero digit, its partial product is the answer.
"""

from __future__ import annotations

from .records import Record, derive_seed, make_rng

__all__ = ["generate_multiplication", "multiplication_steps", "given_numbers"]


def multiplication_steps(a: int, b: int) -> list[str]:
    """The partial-products solution lines for ``a x b`` (``a, b >= 1``)."""
    if a < 1 or b < 1:
        raise ValueError("a and b must be positive")
    steps: list[str] = []
    partials: list[int] = []
    for f in place_values(b):
        p = a * f
        steps.append(f"{a} x {f} = <<{a}*{f}={p}>>{p}")
        partials.append(p)
    acc = partials[0]
    for p in partials[1:]:
        s = acc + p
        steps.append(f"{acc} + {p} = <<{acc}+{p}={s}>>{s}")
        acc = s
    assert acc == a * b
    return steps


def place_values(b: int) -> list[int]:
    """The non-zero place values of b (26 -> [6, 20]): the factors of its partial products."""
    return [int(ch) * 10 ** i for i, ch in enumerate(reversed(str(b))) if ch != "0"]


def given_numbers(record) -> list[int]:
    """Numbers a multiplication's steps may use beyond the question's: the place values of b (for
    grading.steps.step_labels)."""
    return place_values(int(record.meta["b"]))


def _digits(rng, lo: int, hi: int) -> int:
    d = rng.randint(lo, hi)
    return rng.randint(10 ** (d - 1), 10 ** d - 1)


def generate_multiplication(
    n: int,
    seed: int,
    min_digits_a: int = 2,
    max_digits_a: int = 3,
    min_digits_b: int = 1,
    max_digits_b: int = 2,
) -> list[Record]:
    """``n`` problems ``a x b`` with ``a`` of ``min_digits_a..max_digits_a`` digits and
    ``b`` of ``min_digits_b..max_digits_b`` digits; deterministic in ``seed`` and the knobs."""
    if n < 0:
        raise ValueError("n must be >= 0")
    for lo, hi, nm in ((min_digits_a, max_digits_a, "a"), (min_digits_b, max_digits_b, "b")):
        if not 1 <= lo <= hi:
            raise ValueError(f"need 1 <= min_digits_{nm} <= max_digits_{nm}, got {lo}, {hi}")
    rng = make_rng(derive_seed("multiplication", seed))
    out = []
    for i in range(n):
        a = _digits(rng, min_digits_a, max_digits_a)
        b = _digits(rng, min_digits_b, max_digits_b)
        steps = multiplication_steps(a, b)
        out.append(Record(
            question=f"What is {a} x {b}?", steps=steps, answer=str(a * b),
            meta={"task": "multiplication", "n_steps": len(steps), "a": a, "b": b,
                  "digits_a": len(str(a)), "digits_b": len(str(b)), "index": i,
                  "dedup_key": f"multiplication:{a}x{b}"},
        ))
    return out
