"""The task's own checker for chains of thought with calculator annotations: whether each step is
right, exactly, without a model (the labels a process reward model is trained on).

A step is written like ``The shop is left with 6 - 4 = <<6-4=2>>2 pens.``: an annotation
``<<expression=result>>`` and a visible copy of the result after it.

    check_step(text)            'ok' when every annotation is closed, evaluates (safe_eval) to its
                                claimed result and its visible copy matches; 'bad' when one does
                                not; 'none' when the step has no annotation.
    step_labels(question, steps)
                                per step True / False: right when check_step is 'ok' and every
                                number the step computes with is a number of the question or the
                                result of an earlier step; the first wrong step and every step
                                after it are wrong (a correct computation on a wrong premise is
                                still on a wrong path). A step without an annotation cannot be
                                checked and counts as wrong.

Imports nothing of the engine (grading/ sits below it).
"""
from __future__ import annotations

import re
from fractions import Fraction

from .safe_eval import BinOp, Neg, Num, find_annotations, parse, safe_eval

STEP_OK, STEP_BAD, STEP_NONE = "ok", "bad", "none"
ANNOTATION_WITH_COPY = re.compile(r"<<([^<>]*)>>(-?\d+(?:\.\d+)?(?:/\d+)?)?")
_NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)?")
_ANNOTATION = re.compile(r"<<[^<>]*>>")
# numbers a question may write as words ("twice", "three times", "half")
_WORD_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                 "ten": 10, "eleven": 11, "twelve": 12, "twice": 2, "double": 2, "doubles": 2, "doubled": 2,
                 "half": 2, "halves": 2, "triple": 3, "triples": 3, "tripled": 3, "third": 3, "thirds": 3,
                 "quarter": 4, "quarters": 4}
_WORD = re.compile(r"[a-z]+")


def check_step(text: str) -> str:
    """'ok', 'bad' (an annotation is wrong, unclosed or unparseable) or 'none' (no annotation)."""
    anns = list(find_annotations(text))
    if text.count("<<") != len(anns) or text.count(">>") != len(anns):
        return STEP_BAD
    if not anns:
        return STEP_NONE
    if not all(a.ok for a in anns):
        return STEP_BAD
    for m in ANNOTATION_WITH_COPY.finditer(text):
        if m.group(2) is not None:
            body = m.group(1)
            if safe_eval(m.group(2)) != safe_eval(body.rsplit("=", 1)[1]):
                return STEP_BAD
    return STEP_OK


def question_numbers(question: str) -> set:
    """The numbers written in a question, in digits or as words (twice, three times, half), as exact
    fractions; annotations excluded."""
    text = _ANNOTATION.sub(" ", question)
    found = {Fraction(m.group()) for m in _NUMBER.finditer(text)}
    return found | {Fraction(_WORD_NUMBERS[w]) for w in _WORD.findall(text.lower()) if w in _WORD_NUMBERS}


def _operands(node) -> list:
    """The literal numbers an expression tree computes with (a negated literal counts as itself)."""
    if isinstance(node, Num):
        return [node.value]
    if isinstance(node, Neg):
        return _operands(node.operand)
    if isinstance(node, BinOp):
        return _operands(node.left) + _operands(node.right)
    return []


def step_labels(question: str, steps, given=()) -> list:
    """True / False per step (see the module docstring). `steps` are the steps' texts in order;
    `given`: numbers a task lets its steps use besides the question's (the place values of a
    multiplication's second factor: data.multiplication.given_numbers)."""
    if isinstance(steps, str):
        raise TypeError("step_labels: steps must be a list of step texts, got one string")
    known = question_numbers(question) | {Fraction(v) for v in given}
    labels, on_track = [], True
    for text in steps:
        ok = on_track and check_step(text) == STEP_OK
        if ok:
            for ann in find_annotations(text):
                tree = parse(ann.expr)
                if tree is None or any(v not in known for v in _operands(tree)):
                    ok = False
                    break
                known.add(ann.value)
        on_track = ok
        labels.append(ok)
    return labels
