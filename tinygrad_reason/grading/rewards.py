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

For RL the answer a completion is graded on is strict (strict_answer): only the one answer span
(after a single <|answer|>), a single \\boxed{}, or a single GSM8K "#### n" counts; a hedge
("2, or maybe 3"), several boxed answers or several answer markers, and an answer that only the
last-number fallback finds are no answer. Evaluation keeps the lenient extraction (a model is not
marked down for a format it was never taught); a policy that is REWARDED for the lenient one learns
to hedge. strict_rewards grades a batch: the exact paths in-process, the rest in the grader's
killable worker processes under the time limit, several at once (grader.grade_many).

The built-in tasks and GSM8K have numeric answers, so steps 1-2 decide them in microseconds; MATH's
answers reach step 3. Imports nothing from the engine.
"""
from __future__ import annotations

import re

from . import answers, grader
from .safe_eval import format_number, safe_eval

ANSWER_MARKER, END_MARKER, STEP_MARKER = answers.ANSWER_MARKER, answers.END_MARKER, "<|step|>"
MAX_EXACT_LEN = 64          # longer answers are not tried as arithmetic (safe_eval's cost is linear)
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_THOUSANDS_COMMA = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
_SEPARATOR = re.compile(r"[,;]")


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


# ------------------------------------------------------------------ strict answers, for rewards
def _several_values(answer: str) -> bool:
    """A list of values: a ',' or ';' that is not a thousands separator (1,000)."""
    return bool(_SEPARATOR.search(_THOUSANDS_COMMA.sub("", answer)))


def strict_answer(text, reference=None) -> str | None:
    """The one answer a completion commits to, or None (the module docstring's rules). `text` is
    the decoded completion with special tokens as text; `reference`, when given, allows a list
    answer (1, 2) where the reference is itself a list. Never raises; linear time."""
    if not isinstance(text, str):
        return None
    body = text.split(END_MARKER, 1)[0]
    markers = body.count(ANSWER_MARKER)
    if markers > 1:
        return None
    span = body.split(ANSWER_MARKER, 1)[1] if markers else body
    boxes = len(_BOX_OPEN.findall(span))
    if boxes > 1:
        return None
    if boxes == 1:
        found = answers.last_boxed(span)
    elif markers:
        found = span.strip()
    elif span.count("####") == 1:
        found = answers.gsm8k_answer(span)
    else:
        return None                      # no answer span: the last-number fallback does not count
    if not found or answers.has_hedge_words(found):
        return None                      # "2 or 3", "maybe 2", "about 2": a hedge is no answer
    if _several_values(found) and not (reference is not None and _several_values(str(reference))):
        return None
    return found


def strict_rewards(texts, references, timeout: float = 1.0, workers: int = 2) -> list[float]:
    """correctness_reward of each completion's strict_answer against its reference (1.0 / 0.0):
    equal canonical forms and unequal exact numbers are decided in-process, everything else by the
    sympy grader in its worker processes, `workers` at once, each under `timeout` seconds."""
    texts, references = list(texts), list(references)
    if len(texts) != len(references):
        raise ValueError(f"strict_rewards: {len(texts)} completions for {len(references)} references")
    out = [0.0] * len(texts)
    hard = []                            # (index, answer, reference) left to the sympy grader
    for i, (text, ref) in enumerate(zip(texts, references)):
        found = strict_answer(text, ref)
        p, r = canonical_answer(found), canonical_answer(ref)
        if p is None or r is None:
            continue
        if p == r:
            out[i] = 1.0
        elif not (is_exact_number(p) and is_exact_number(r)):
            hard.append((i, str(found), str(ref)))
    if hard:
        verdicts = grader.grade_many([(a, r) for _, a, r in hard], timeout=timeout, workers=workers)
        for (i, _, _), ok in zip(hard, verdicts):
            out[i] = 1.0 if ok else 0.0
    return out
