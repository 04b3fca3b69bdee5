"""Unit tests: extraction, normalization, parser, equivalence."""
import time

import pytest

from tinygrad_reason.grading import math_parser as mp
from tinygrad_reason.grading.answers import extract_answer, last_boxed, normalize_answer
from tinygrad_reason.grading.grader import grade, grade_many, grade_response, warmup


@pytest.fixture(scope="module", autouse=True)
def _warm():
    assert warmup(1)


# ------------------------------------------------------------------ extraction
@pytest.mark.parametrize("text,want", [
    (r"so $\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
    (r"\boxed{1} then \boxed{2} finally \boxed{3}", "3"),              # LAST box counts
    (r"\boxed{\left(3, \frac{\pi}{2}\right)}", r"\left(3, \frac{\pi}{2}\right)"),
    (r"\boxed{a{b{c}}d}", "a{b{c}}d"),                                  # nested braces
    (r"\boxed{\boxed{7}}", "7"),
    (r"\fbox{42}", "42"),
    (r"\boxed 5$", "5"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),                                   # escaped braces
    (r"\boxed{2} and then \boxed{3", "2"),                              # unterminated box ignored
    ("work work\n#### 1,234", "1234"),
    ("reasoning <|answer|> 17 <|endoftext|> junk 99", "17"),
    (r"x <|answer|>\boxed{4}<|endoftext|>", "4"),
    ("the total is 12 apples and then 3.5", "3.5"),
    ("costs -1,250 dollars", "-1250"),
    ("", None), ("no numbers here", None),
])
def test_extract(text, want):
    assert extract_answer(text) == want


def test_extract_marker_is_a_parameter():
    assert extract_answer("a [ANS] 12 [END] 13", answer_marker="[ANS]", end_marker="[END]") == "12"
    assert extract_answer("no box 5", fallback_last_number=False) is None


def test_last_boxed_non_string():
    assert last_boxed(None) is None and extract_answer(None) is None


# ------------------------------------------------------------------ normalization
@pytest.mark.parametrize("raw,norm", [
    ("1,000", "1000"), (r"1\,000", "1000"), ("1{,}000", "1000"), (r"10,\!080", "10080"),
    (r"\$32,\!348", "32348"), (r"90^\circ", "90"), (r"90^{\circ}", "90"), ("50\\%", "50"),
    (r"5.4 \text{ cents}", "5.4"), (r"864 \mbox{ inches}^2", "864"), ("18 apples", "18"),
    ("x = 3", "3"), (r"x \in [-2,7]", "[-2,7]"), ("42.", "42"), (r"\text{(C)}", "C"),
    (r"1\frac{4}{5}", "9/5"), ("4210_{5}", "4210_5"), (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (r"\left( 1, 2 \right)", "( 1, 2 )"), ("\uff11\uff12", "12"), ("1\u200b2", "12"),
    ("\u22123", "-3"),
])
def test_normalize(raw, norm):
    assert normalize_answer(raw) == norm


# ------------------------------------------------------------------ parser
@pytest.mark.parametrize("s,val", [
    ("1+2*3", 7), ("2^3^2", 512), ("-2^2", -4), (r"\frac12", 0.5), (r"\frac{3}{4}", 0.75),
    (r"\sqrt{16}", 4), (r"\sqrt[3]{27}", 3), ("5!", 120), ("(1+2)(3+4)", 21), ("2(3)", 6),
    ("[1+1]^2", 4), ("0.25", 0.25), (".5", 0.5), ("2**10", 1024), (r"3\cdot 4", 12),
    (r"6 \div 4", 1.5), ("1/2/2", 0.25),
])
def test_parser_values(s, val):
    node = mp.parse_expression(s)
    assert node is not None and node.val is not None and float(node.val) == val


def test_parser_builds_sympy_directly():
    import sympy
    e = mp.parse_math(r"2\pi + 3\sqrt{2} - x^2")
    assert e is not None
    x = sympy.Symbol("x")
    assert sympy.simplify(e - (2 * sympy.pi + 3 * sympy.sqrt(2) - x ** 2)) == 0
    assert mp.parse_math("e^{2}") == sympy.Pow(sympy.E, 2, evaluate=False) or \
        sympy.simplify(mp.parse_math("e^{2}") - sympy.E ** 2) == 0


@pytest.mark.parametrize("s", [
    "9^9^9^9", "10^10^10", "2^{2^{2^{100}}}", "x^{10^{10}}", "100000!", "101!", "(3!)!!", "1" * 60,
    "(" * 200 + "1" + ")" * 200, "abc", "__import__('os')", "().__class__", "lambda: 1", "eval(1)",
    r"\input{x}", "a_1", "2 or 3", "", "1 +", r"\sqrt[1000]{2}", r"\frac{1}", "x" * 3000,
])
def test_parser_rejects(s):
    assert mp.parse_answer(s) is None


def test_parser_structures():
    assert mp.parse_answer("(1,2)")[0] == "seq"
    assert mp.parse_answer("[1,2)")[1:3] == ("[", ")")
    assert mp.parse_answer(r"\{1,2\}")[0] == "set"
    assert mp.parse_answer("1, 2, 3")[0] == "set"
    assert mp.parse_answer(r"(0,1) \cup (2,3)")[0] == "union"
    assert mp.parse_answer(r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}")[0] == "matrix"
    assert mp.parse_answer("y = 2x+1")[0] == "eq"
    assert len(mp.parse_answer(r"1 \pm \sqrt{2}")[1]) == 2


# ------------------------------------------------------------------ equivalence
EQUAL = [
    ("0.5", r"\frac{1}{2}"), (r"\dfrac12", "1/2"), (r"\tfrac{1}{2}", "0.5"), ("1,000", "1000"),
    (r"1\,000", "1{,}000"), ("3", "x = 3"), ("x=3", "3"), (r"\$18.90", "18.9"), ("90", r"90^\circ"),
    ("50", r"50\%"), ("18", "18 apples"), ("18.0", "18"), ("42.", "42"),
    (r"2\sqrt{3}", r"\sqrt{12}"), (r"\frac{\sqrt{3}}{3}", r"\frac{1}{\sqrt3}"), (r"\frac{3\sqrt3}{4}", r"0.75\sqrt{3}"),
    ("2k+2", "2(k+1)"), ("x^2-1", "(x-1)(x+1)"), (r"\frac{11+9a}{20}", r"\frac{9a}{20}+\frac{11}{20}"),
    (r"1 \pm \sqrt{19}", r"1-\sqrt{19}, 1+\sqrt{19}"), (r"\{1\pm\sqrt{5},-2\}", r"-2, 1+\sqrt5, 1-\sqrt 5"),
    ("3, 5, 7", "7, 5, 3"), ("6-5i", "6 - 5i"), ("-5i+6", "6 - 5i"), (r"e^{i\pi}", "-1"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)"), ("(2,\\infty)", "(2, \\infty)"),
    (r"(0,9) \cup (9,36)", r"(9,36)\cup(0,9)"), ("y=2x+3", "y = 2x + 3"), ("2x+3", "y=2x+3"),
    ("5x - 7y + 11z + 4 = 0", "-5x+7y-11z-4=0"), (r"\begin{pmatrix} -1/3 \\ 2/3 \end{pmatrix}",
                                                 r"\begin{pmatrix} -\frac13 \\ \frac23 \end{pmatrix}"),
    ("(1/5, -18/5)", r"\begin{pmatrix} 1/5 \\ -18/5 \end{pmatrix}"), (r"6.72\times 10^{-5}", ".0000672"),
    ("(x-1)(x^4+x^2+1)", "x^5 - x^4 + x^3 - x^2 + x - 1"), ("-5x+7y-11z=4", "5x - 7y + 11z + 4 = 0"),
    (r"\text{East}", r"\text{east}"), ("C", r"\text{(C)}"), ("52", "52_8"), ("52_8", "52_{8}"),
    (r"137 \frac{1}{2}", "137.5"), (r"\frac{270}{7}", r"\frac{270}7\text{ degrees}"),
    (r"\sin^2 x + \cos^2 x", "1"), (r"\cot x", r"\frac{\cos x}{\sin x}"), ("3.14159265358", r"\pi"),
    ("100!", "100!"), (r"\sqrt[3]{27}", "3"), (r"\boxed{7}", "7"), ("\uff17", "7"),
]
DIFFERENT = [
    ("(1,2)", "[1,2)"), ("(1,2)", "(2,1)"), ("[1,2]", "[1,2)"), ("2, or maybe 3", "2"), ("2 or 3", "2"),
    ("2, 3", "2"), ("2k+3", "2(k+1)"), ("3.1415", r"\pi"), ("0.3333", "1/3"), (r"\sqrt{13}", r"\sqrt{12}"),
    ("x", "y"), ("6+5i", "6-5i"), (r"1+\sqrt{19}", r"1 \pm \sqrt{19}"), ("1, 2", "1, 2, 2"),
    (r"(2,\infty)", r"[2,\infty)"), ("D", "C"), ("west", "east"), ("53", "52_8"), ("", "1"), ("1", ""),
    ("18.4", "18"), ("-3", "3"), ("(-\\infty, 0]", "(-\\infty, 0)"), ("1000", "1,001"),
]


@pytest.mark.parametrize("p,r", EQUAL)
def test_equal(p, r):
    assert grade(p, r) is True
    assert grade(r, p) is True


@pytest.mark.parametrize("p,r", DIFFERENT)
def test_different(p, r):
    assert grade(p, r) is False


def test_grade_response():
    assert grade_response(r"... so the answer is \boxed{\frac{1}{2}}.", "0.5")
    assert grade_response("she makes 18 dollars\n#### 18", "18")
    assert not grade_response(r"\boxed{3} hmm, actually \boxed{4}", "3")


def test_grade_many_matches_grade():
    pairs = EQUAL[:20] + DIFFERENT[:10]
    assert grade_many(pairs, timeout=1.0, workers=2) == [True] * 20 + [False] * 10


def test_grade_fast_paths_are_fast():
    t = time.monotonic()
    for _ in range(200):
        assert grade("1,000", "1000") and not grade("(1,2)", "[1,2)")
    assert time.monotonic() - t < 2.0
