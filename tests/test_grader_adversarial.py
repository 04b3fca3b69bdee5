"""Adversarial corpus + fuzzing: no code ever runs, every call returns within its limit, the
process survives."""
import os
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinygrad_reason.grading import math_parser as mp
from tinygrad_reason.grading.answers import extract_answer, normalize_answer
from tinygrad_reason.grading.grader import grade, grade_many, grade_response, warmup

TIMEOUT = 1.0
SLACK = 0.5


@pytest.fixture(scope="module", autouse=True)
def _warm():
    assert warmup(2)


def timed_grade(p, r, timeout=TIMEOUT):
    t = time.monotonic()
    g = grade(p, r, timeout=timeout)
    dt = time.monotonic() - t
    assert isinstance(g, bool)
    assert dt < timeout + SLACK, f"grade took {dt:.2f}s for {p[:80]!r}"
    return g


def injection_corpus(path):
    return [
        f"__import__('os').system('echo pwned > {path}')",
        f"__import__(\"os\").system(\"touch {path}\")",
        f"\\boxed{{__import__('os').system('echo pwned > {path}')}}",
        f"exec(\"open('{path}','w').write('x')\")",
        f"eval(\"__import__('os').system('touch {path}')\")",
        f"open('{path}', 'w').write('pwned')",
        f"(lambda: __import__('os').system('touch {path}'))()",
        f"[c for c in ().__class__.__bases__[0].__subclasses__() if c.__name__ == 'Popen'][0]('touch {path}', shell=True)",
        "().__class__.__bases__[0].__subclasses__()",
        "__builtins__.__dict__['eval']('1')",
        "globals()", "locals()", "vars()", "compile('1','','eval')",
        "Symbol('x').__class__", "sympify('1')", "x.__init__.__globals__",
        f"\\input{{{path}}}", f"\\write18{{touch {path}}}", f"$(touch {path})", f"`touch {path}`",
        "import os", "1; import os", "1 if __import__('os') else 2",
    ]


def test_code_injection_never_runs(tmp_path):
    target = tmp_path / "pwned"
    corpus = injection_corpus(target)
    for s in corpus:
        assert mp.parse_answer(normalize_answer(s)) is None or "import" not in s
        for ref in ("1", "0", s):
            if ref == s:
                continue
            assert timed_grade(s, ref) is False
            assert timed_grade(ref, s) is False
        assert grade_response(f"Let me think.\n\\boxed{{{s}}}", "1") is False
        assert mp.parse_math(s) is None
    grade_many([(s, "1") for s in corpus], timeout=TIMEOUT)
    assert not target.exists()
    assert not os.path.exists(target)


TOWERS = ["9**9**9**9", "10^10^10", "2^{2^{2^{100}}}", "9^{9^{9^{9}}}", "(10^{10})^{10^{10}}",
          "100000!", "(100!)!", "1000!!", r"\sqrt[10^{10}]{2}", "x^{10^{10}}", "(x+1)^{10^{10}}",
          "10^{-10^{10}}", "2^{1000}^{1000}", r"e^{e^{e^{e^{10}}}}", r"\sin(10^{10^{10}})",
          r"(\sin^2 x+\cos^2 x)^{200}(x+1)^{200}", "1" * 10_000, "9" * 51, "0." + "3" * 49]


@pytest.mark.parametrize("s", TOWERS)
def test_exponent_towers_and_factorials(s):
    timed_grade(s, "1")
    timed_grade("1", s)
    timed_grade(s, s)           # identical strings are fine (string match), never evaluated


def test_pathological_sympy_is_killed_and_worker_recovers():
    slow = r"(\sin^2 x+\cos^2 x)^{200}(x+1)^{200}"
    assert timed_grade(slow, r"(x+1)^{200}", timeout=0.5) is False
    # the worker was killed; a fresh one answers the next symbolic question
    assert timed_grade(r"2\sqrt{3}", r"\sqrt{12}") is True
    assert timed_grade(r"\sin^2 x + \cos^2 x", "1") is True


def test_grade_many_isolates_slow_items():
    slow = (r"(\sin^2 x+\cos^2 x)^{300}(x+y+1)^{300}", r"(x+y+1)^{300}")
    good = [(r"2\sqrt{3}", r"\sqrt{12}"), ("1/2", "0.5"), (r"\cot x", r"\frac{\cos x}{\sin x}")]
    pairs = [slow, good[0], slow, good[1], slow, good[2]] + good * 5
    t = time.monotonic()
    res = grade_many(pairs, timeout=TIMEOUT, workers=2)
    dt = time.monotonic() - t
    assert res == [False, True, False, True, False, True] + [True] * 15
    assert dt < 3 * TIMEOUT / 2 + 2 * TIMEOUT + 3 * SLACK     # 3 slow items over 2 workers


def test_deep_nesting():
    for open_, close in (("(", ")"), ("[", "]"), ("{", "}"), (r"\sqrt{", "}"), (r"\frac{1}{", "}"),
                         (r"\left(", r"\right)"), (r"\boxed{", "}")):
        s = open_ * 100_000 + "1" + close * 100_000
        timed_grade(s, "1")
        timed_grade("1", s)
        assert mp.parse_answer(s) is None
        extract_answer(s)
    s = "-" * 100_000 + "1"
    timed_grade(s, "1")
    s = "1+" * 50_000 + "1"
    timed_grade(s, "50001")


def test_megabyte_strings():
    big = "a" * 1_000_000
    for s in (big, "1" * 1_000_000, "\\boxed{" * 200_000, "{" * 1_000_000, "}" * 1_000_000,
              "\\" * 1_000_000, big + "\\boxed{42}", "\\boxed{1}" * 100_000, "#### " * 200_000,
              "1," * 500_000, "<|answer|>" * 100_000):
        t = time.monotonic()
        extract_answer(s)
        normalize_answer(s)
        assert time.monotonic() - t < 2.0
        timed_grade(s, "42")
        timed_grade("42", s)
    assert extract_answer(big + "\\boxed{42}") == "42"
    assert extract_answer("\\boxed{1}" * 100_000) == "1"


# two answers a chain-of-thought model wrote on the OOD split: the unit-word rule's regex took
# minutes on each (nested quantifiers over letter runs) before its letter runs were made possessive
LOOPING_ANSWERS = [
    "16 -  The library now has  The library now has  The library now has  The library now has  The shelves "
    "hold  The library now has  The library now has 16 -  The library now has  The library now has  The library "
    "now has",
    "15 - 15-27 -  Now she has  The baskets hold  Now she has  After baking more, she has  After baking more, "
    "she has 1",
]


@pytest.mark.parametrize("s", LOOPING_ANSWERS + ["5 " + "m" * 250, "7 " + "abcdefg " * 30 + "-",
                                                 "a " * 120 + "5", "3 " + "cm" * 120 + " x"])
def test_word_runs_normalize_in_linear_time(s):
    from tinygrad_reason.grading.rewards import is_correct
    t = time.monotonic()
    normalize_answer(s)
    assert is_correct(s, "338") is False
    assert time.monotonic() - t < 0.5, f"{time.monotonic() - t:.2f}s for {s[:60]!r}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["m", "mm", "apples", "The", "library", "now", "has", "she", " ", "  ", "5", "16",
                                 "-", ".", ",", "^2", "x", "=", "{", "}", "\\frac{1}{2}", "or"]),
                min_size=20, max_size=150))
def test_word_soup_normalizes_quickly(parts):
    """Any mix of unit words, words, digits and punctuation: normalize_answer stays fast (no regex
    here may backtrack exponentially; the unit-word rule before its fix fails this in its first
    examples)."""
    s = "".join(parts)
    t = time.monotonic()
    normalize_answer(s)
    extract_answer(s)
    assert time.monotonic() - t < 0.5, f"{time.monotonic() - t:.2f}s for {s[:80]!r}"


def test_unit_words_still_strip():
    for s, want in (("18 apples", "18"), ("864 inches^2", "864"), ("3 mm", "3"), ("12 big apples", "12"),
                    ("5 or 6 apples", "5 or 6"), ("7 the cat sat", "7 the cat sat")):
        assert normalize_answer(s) == want, s


ODD_UNICODE = ["\u200f42", "4\u200d2", "\uff14\uff12", "42\U0001F600", "\U0001F600", "\u202e24",
               "\ufeff42", "\u0664\u0662", "4\u03002", "\u00b9\u00b2", "\x00", "\ud800", "42\u0000",
               "\u2212\u0031", "\u221a2", "\u03c0", "\u00bd"]


@pytest.mark.parametrize("s", ODD_UNICODE)
def test_odd_unicode(s):
    timed_grade(s, "42")
    timed_grade("42", s)
    extract_answer(s)


def test_unicode_digits_mean_digits():
    assert timed_grade("\uff14\uff12", "42")          # fullwidth
    assert timed_grade("4\u200b2", "42")              # zero-width space
    assert not timed_grade("\U0001F600", "42")


def test_hedged_answers_are_wrong():
    for hedge in ("2, or maybe 3", "2 or 3", r"2 \text{ or } 3", "2, 3", r"\{2, 3\}", "2 and 3",
                  "either 2 or 3", "2 (or possibly 3)", "2/3?", r"2 \pm 1", "maybe 2", "not 2"):
        assert timed_grade(hedge, "2") is False, hedge
        assert grade_response(f"\\boxed{{{hedge}}}", "2") is False, hedge


def test_several_boxes_last_counts():
    resp = r"First \boxed{2}. Wait, no: \boxed{3}."
    assert grade_response(resp, "3") and not grade_response(resp, "2")
    assert grade(resp, "3") and not grade(resp, "2")


def test_empty_and_garbage_inputs():
    for s in ("", " ", "\n", "$", "$$", "\\boxed{}", "{}", "()", "[]", ",", "=", "==", "\\", "^", "!"):
        assert timed_grade(s, "1") is False
        assert timed_grade("1", s) is False
        extract_answer(s)
    for bad in (None, 1, 1.5, b"1", ["1"], object()):
        assert grade(bad, "1") is False and grade("1", bad) is False
        assert extract_answer(bad) is None
    assert grade_many([("1", "1"), None, ("2",), ("2", "2")]) == [True, False, False, True]


def test_process_survives():
    assert sys.getrecursionlimit() >= 1000
    assert grade("1/2", "0.5")


# ------------------------------------------------------------------ fuzzing
FUZZ_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

_ATOMS = ["1", "2", "0", "x", "y", "e", "i", r"\pi", r"\infty", "10", "0.5", "99", "k"]
_OPS = ["+", "-", "*", "/", "^", "**", r"\cdot", r"\pm", ",", "=", "!", " ", r"\cup"]
_WRAPS = [("(", ")"), ("[", "]"), ("{", "}"), (r"\frac{", "}{3}"), (r"\sqrt{", "}"),
          (r"\sqrt[3]{", "}"), (r"\left(", r"\right)"), (r"\boxed{", "}"), (r"\text{", "}"),
          (r"\{", r"\}"), (r"\sin(", ")"), ("", "^{9^9}"), ("", "!"), ("", r"^\circ"), ("\\$", "")]


@st.composite
def latexish(draw, depth=0):
    if depth > 4 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(_ATOMS))
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(latexish(depth + 1)) + draw(st.sampled_from(_OPS)) + draw(latexish(depth + 1))
    if kind == 1:
        o, c = draw(st.sampled_from(_WRAPS))
        return o + draw(latexish(depth + 1)) + c
    return draw(latexish(depth + 1)) + draw(latexish(depth + 1))


@FUZZ_SETTINGS
@given(st.text(max_size=300))
def test_fuzz_random_text(s):
    t = time.monotonic()
    mp.parse_answer(s)
    mp.parse_math(s)
    normalize_answer(s)
    extract_answer(s)
    assert time.monotonic() - t < 1.0
    timed_grade(s, "1")


@FUZZ_SETTINGS
@given(st.text(alphabet="0123456789+-*/^()[]{}\\,.=! xiepfrcsqtbox_", max_size=200))
def test_fuzz_math_alphabet(s):
    t = time.monotonic()
    mp.parse_answer(s)
    mp.parse_math(s)
    assert time.monotonic() - t < 1.0
    timed_grade(s, s[::-1])


@FUZZ_SETTINGS
@given(latexish(), latexish())
def test_fuzz_structured_latex(a, b):
    t = time.monotonic()
    node = mp.parse_answer(normalize_answer(a))
    mp.parse_math(a)
    assert time.monotonic() - t < 1.0
    assert timed_grade(a, a) is True or node is None or True   # self-grade must not raise
    timed_grade(a, b)
