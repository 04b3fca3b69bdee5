"""Every MATH-500 / GSM8K reference answer must grade correct against itself (bare, boxed,
``#### n``) and a different answer must grade wrong.  Data lives in ``../shared/data`` relative
to the repository root; the tests skip with a reason when it is absent."""
import json
import os
import time

import pytest

from tinygrad_reason.grading import math_parser
from tinygrad_reason.grading.answers import extract_answer, normalize_answer
from tinygrad_reason.grading.grader import grade_many, warmup

DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
MATH500 = os.path.join(DATA, "math500", "test.jsonl")
GSM8K = os.path.join(DATA, "gsm8k", "test.jsonl")
TIMEOUT = 2.0


def _rows(path):
    if not os.path.exists(path):
        pytest.skip(f"dataset not found at {path} (expected ../shared/data relative to the repo root)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _check(pairs, expect, label):
    t = time.monotonic()
    got = grade_many(pairs, timeout=TIMEOUT, workers=2)
    dt = time.monotonic() - t
    bad = [(p, r) for (p, r), g in zip(pairs, got) if g != expect]
    assert not bad, f"{label}: {len(bad)} mismatches, e.g. {bad[:5]}"
    return dt


@pytest.fixture(scope="module", autouse=True)
def _warm():
    warmup(2)


def test_math500_self_and_wrong():
    rows = _rows(MATH500)
    answers = [r["answer"] for r in rows]
    assert len(answers) == 500
    same = [(a, a) for a in answers]
    same += [("\\boxed{" + a + "}", a) for a in answers]
    same += [(f"The answer is $\\boxed{{{a}}}$.", a) for a in answers]
    # extraction from a full response must give back the reference
    for a in answers:
        assert extract_answer(f"Some work... so the final answer is $\\boxed{{{a}}}$.") == a.strip()
    _check(same, True, "math500 self")
    wrong = []
    for i, a in enumerate(answers):
        for j in range(i + 1, i + len(answers)):
            b = answers[j % len(answers)]
            if normalize_answer(b).replace(" ", "") != normalize_answer(a).replace(" ", ""):
                wrong.append((b, a))
                break
    _check(wrong, False, "math500 wrong")
    # report how many parse symbolically
    parsed = sum(math_parser.parse_answer(normalize_answer(a)) is not None for a in answers)
    print(f"\nMATH-500: {parsed}/500 ({parsed / 5:.1f}%) parse symbolically, "
          f"{500 - parsed} fall back to string match")


def _gsm_gold(text):
    return text.split("####")[-1].strip().replace(",", "")


def test_gsm8k_self_and_wrong():
    rows = _rows(GSM8K)
    golds = [_gsm_gold(r["answer"]) for r in rows]
    assert len(golds) == 1319
    for r, g in zip(rows, golds):
        assert extract_answer(r["answer"]) == g
    same = [(g, g) for g in golds] + [("\\boxed{" + g + "}", g) for g in golds]
    same += [(extract_answer(f"So she makes {g} dollars.\n#### {g}"), g) for g in golds]
    _check(same, True, "gsm8k self")
    wrong = [(str(int(g) + 1), g) for g in golds]
    wrong += [("\\boxed{" + str(int(g) - 1) + "}", g) for g in golds]
    _check(wrong, False, "gsm8k wrong")
    parsed = sum(math_parser.parse_answer(g) is not None for g in golds)
    print(f"\nGSM8K: {parsed}/{len(golds)} parse symbolically")
