"""The one definition of a correct answer, and of a well-formed completion, that every evaluation,
vote, verifier label and reward in the package uses.

    is_correct(predicted, reference)
        1. both answers to their canonical form (canonical_answer): the grader's normalization
           (answers.normalize_answer), spaces and thousands commas removed, and any plain
           arithmetic value written exactly (4.0, 8/2, 04 -> 4: safe_eval + format_number);
        2. equal canonical forms are correct; two different exact numbers are not;
        3. anything else (LaTeX, expressions, intervals, sets) is decided by the sympy grader
           (grader.grade), which runs in a killable worker process under a time limit and never
           executes model output.
    correctness_reward = 1.0 if is_correct else 0.0 (no answer: 0.0).
    format_reward      = 1.0 if a completion's text has the format's structure (format_ok).

The built-in tasks and GSM8K have numeric answers, so steps 1-2 decide them in microseconds; MATH's
answers reach step 3. Imports nothing from the engine.
"""
from __future__ import annotations

from . import answers, grader
from .safe_eval import format_number, safe_eval

ANSWER_MARKER, END_MARKER, STEP_MARKER = answers.ANSWER_MARKER, answers.END_MARKER, "<|step|>"
MAX_EXACT_LEN = 64          # longer answers are not tried as arithmetic (safe_eval's cost is linear)


def canonical_answer(text) -> str | None:
    """The answer's equivalence-class key for exact matching and voting; None for no answer."""
    if text is None:
        return None
    s = answers.normalize_answer(str(text)).replace(",", "").replace(" ", "")
    if not s:
        return None
    if len(s) <= MAX_EXACT_LEN:
        v = safe_eval(s)
        if v is not None:
            return format_number(v)
    return s


def is_exact_number(canonical: str | None) -> bool:
    """Whether a canonical answer is a plain exact number (what canonical_answer writes for one)."""
    if canonical is None or len(canonical) > MAX_EXACT_LEN:
        return False
    value = safe_eval(canonical)
    return value is not None and format_number(value) == canonical


def is_correct(predicted, reference, timeout: float = 1.0) -> bool:
    """The package's definition of a correct answer (see the module docstring); never raises."""
    p, r = canonical_answer(predicted), canonical_answer(reference)
    if p is None or r is None:
        return False
    if p == r:
        return True
    if is_exact_number(p) and is_exact_number(r):
        return False
    return grader.grade(str(predicted), str(reference), timeout=timeout)


def correctness_reward(predicted, reference, timeout: float = 1.0) -> float:
    """1.0 for a correct answer, 0.0 otherwise (a missing answer included)."""
    return 1.0 if is_correct(predicted, reference, timeout) else 0.0


def format_ok(completion_text: str, fmt: str) -> bool:
    """Whether a decoded completion (special tokens kept as text) has the format's structure:
    direct: an answer, then <|endoftext|>; chain of thought: at least one step ended by <|step|>,
    then exactly one <|answer|> with a non-empty answer after the last step, then <|endoftext|>."""
    if fmt not in ("direct", "cot") or not isinstance(completion_text, str):
        raise ValueError(f"format_ok: unknown format {fmt!r}: expected 'direct' or 'cot'")
    body, end, rest = completion_text.partition(END_MARKER)
    if not end or rest.strip():
        return False
    if fmt == "direct":
        return bool(body.strip()) and ANSWER_MARKER not in body and STEP_MARKER not in body
    steps, marker, answer = body.partition(ANSWER_MARKER)
    return (bool(marker) and ANSWER_MARKER not in answer and STEP_MARKER not in answer and bool(answer.strip())
            and steps.count(STEP_MARKER) >= 1 and steps.rstrip().endswith(STEP_MARKER))


def format_reward(completion_text: str, fmt: str) -> float:
    return 1.0 if format_ok(completion_text, fmt) else 0.0
