"""safe_eval: exact answers, rejection of everything else (fast), hypothesis fuzzing."""

import builtins
import time
from fractions import Fraction as F

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinygrad_reason.grading.safe_eval import (
    DEFAULT_LIMITS, BinOp, Limits, Neg, Num, check_annotations, evaluate, find_annotations,
    format_number, parse, safe_eval, tokenize,
)


@pytest.mark.parametrize("expr, value", [
    ("1", F(1)), ("  42  ", F(42)), ("16-3-4", F(9)), ("9*2", F(18)), ("2+3*4", F(14)),
    ("(2+3)*4", F(20)), ("10/4", F(5, 2)), ("8/2/2", F(2)), ("2-3", F(-1)), ("-3+5", F(2)),
    ("-(2+3)", F(-5)), ("--4", F(4)), ("+7", F(7)), ("1 - -1", F(2)), ("80000*1.5", F(120000)),
    ("0.1+0.2", F(3, 10)), (".5*4", F(2)), ("3.", F(3)), ("347 x 26", F(9022)), ("6 × 7", F(42)),
    ("9 ÷ 3", F(3)), ("7 X 3", F(21)), ("((((1))))", F(1)), ("1+2*3-4/2", F(5)),
    ("007", F(7)), ("\t1\n+\r\n2 ", F(3)), ("2*(3+(4-1)*2)", F(18)),
])
def test_valid_expressions(expr, value):
    got = safe_eval(expr)
    assert got == value and isinstance(got, F)


BAD = [
    "", "   ", "__import__('os')", "__import__('os').system('echo pwned')", "os.system('ls')",
    "open('/etc/passwd').read()", "().__class__.__bases__[0]", "(1).real", "2**10", "2 ** 3",
    "2^3", "abs(3)", "a+1", "x", "1 +", "(1+2", "1+2)", "()", "1/0", "5/(2-2)", "1 2", "2(3)",
    "(2)(3)", "1,000", "1e5", "1E5", "1_000", "1..2", "1.2.3", "--", "*3", "3*", "3//2", "3%2",
    "\u0663", "１２", "1\x002", "1;2", "lambda: 1", "[1]", "{1}", "'1'", "\"1\"", "True", "nan",
    "inf", "None", "1 if 1 else 2", "1<2", "1==1", "~1", "1&1", "$5", "5$", "<<1+1=2>>",
    "sum([1,2])", "eval('1')", "exec('1')", "\\frac{1}{2}", "0b1", "1j",
]


@pytest.mark.parametrize("expr", BAD)
def test_rejects_invalid_and_injection(expr):
    assert safe_eval(expr) is None


@pytest.mark.parametrize("value", [None, 12, 1.5, b"1+1", ["1"], object()])
def test_non_string_input_is_none(value):
    assert safe_eval(value) is None
    assert parse(value) is None
    assert tokenize(value) is None


def test_x_is_multiplication_not_hex():
    # documented: 'x' is the multiplication sign, so "0x10" is 0 times 10, not 16
    assert safe_eval("0x10") == 0


def test_digit_cap():
    assert safe_eval("9" * DEFAULT_LIMITS.max_digits) == int("9" * DEFAULT_LIMITS.max_digits)
    assert safe_eval("9" * (DEFAULT_LIMITS.max_digits + 1)) is None
    assert safe_eval("1." + "0" * DEFAULT_LIMITS.max_digits) is None


def test_magnitude_cap_on_intermediates():
    big = "9" * 25
    assert safe_eval(f"{big}*{big}") is None               # ~1e50 > 1e40
    assert safe_eval(f"{big}*{big}/{big}") is None         # the intermediate is too big
    assert safe_eval(f"{big}/{big}*{big}") == int(big)     # same value, small intermediates
    assert safe_eval("*".join(["99999"] * 9)) is None      # grows past the cap step by step
    tiny = "/".join(["99999"] * 12)                          # denominators are capped too
    assert safe_eval(tiny) is None
    lim = Limits(max_abs=1000)
    assert safe_eval("999", lim) == 999 and safe_eval("1000", lim) is None
    assert safe_eval("40*30", lim) is None


def test_depth_cap():
    d = DEFAULT_LIMITS.max_depth
    assert safe_eval("(" * d + "1" + ")" * d) == 1
    assert safe_eval("(" * (d + 1) + "1" + ")" * (d + 1)) is None
    assert safe_eval("-" * d + "1") == (-1) ** d
    assert safe_eval("-" * (d + 1) + "1") is None
    assert safe_eval("(" * 100000 + "1" + ")" * 100000) is None    # no RecursionError


def test_length_cap_and_long_chains():
    n = DEFAULT_LIMITS.max_len
    chain = "1+" * ((n - 1) // 2) + "1"                        # just under the cap
    assert len(chain) <= n and safe_eval(chain) == (n - 1) // 2 + 1
    assert safe_eval("1+" * (n // 2) + "1") is None            # just over the cap
    assert safe_eval("1-2*3/4" * 1) == F(-1, 2)


@pytest.mark.parametrize("blob", [
    "1+" * 500_000 + "1", "(" * 1_000_000, "9" * 1_000_000, "a" * 1_000_000,
    "__import__('os')" * 60_000, "2**" * 300_000 + "2",
])
def test_megabyte_strings_rejected_quickly(blob):
    t = time.perf_counter()
    assert safe_eval(blob) is None
    assert time.perf_counter() - t < 0.05


def test_worst_case_within_limits_is_fast():
    # the longest accepted input of deep multiplications/divisions stays cheap
    expr = ("(" * 40 + "7/3" + ")" * 40 + "*") * 10 + "1"
    expr = expr[:DEFAULT_LIMITS.max_len]
    t = time.perf_counter()
    for _ in range(20):
        safe_eval(expr)
        safe_eval("99999*" * 160 + "1")
    assert time.perf_counter() - t < 0.5


def test_never_calls_eval_or_exec(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("eval/exec/compile must not be used")
    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    monkeypatch.setattr(builtins, "compile", boom)
    assert safe_eval("2*(3+4)") == 14
    assert safe_eval("__import__('os')") is None


def test_parse_tree_shape():
    t = parse("1-2-3")
    assert t == BinOp("-", BinOp("-", Num(F(1), "1"), Num(F(2), "2")), Num(F(3), "3"))
    assert parse("-(2)") == Neg(Num(F(2), "2"))
    assert parse("2 x 3") == BinOp("*", Num(F(2), "2"), Num(F(3), "3"))
    assert evaluate(parse("1/(2-2)")) is None


@pytest.mark.parametrize("value, text", [
    (F(9), "9"), (F(-9), "-9"), (F(0), "0"), (F(5, 2), "2.5"), (F(-1, 4), "-0.25"),
    (F(1, 3), "1/3"), (F(-2, 3), "-2/3"), (F(1, 40), "0.025"), (F(123, 100), "1.23"),
])
def test_format_number(value, text):
    assert format_number(value) == text
    assert safe_eval(text) == value          # round-trips


def test_annotations():
    text = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs. She makes 9 * 2 = $<<9*2=18>>18."
    anns = list(find_annotations(text))
    assert [(a.expr, a.claimed, a.ok) for a in anns] == [("16-3-4", "9", True), ("9*2", "18", True)]
    assert check_annotations(text)
    assert not check_annotations(text.replace("=18>>", "=19>>"))
    assert not check_annotations("no annotations here")
    assert not check_annotations("<<1+1>>")                  # no claimed result
    assert not check_annotations("<<__import__('os')=0>>")
    assert check_annotations("<<80000*1.5=120000>>")


# ------------------------------------------------------------------------------- hypothesis

_ints = st.integers(min_value=0, max_value=999)
_decs = st.tuples(st.integers(0, 99), st.integers(0, 99)).map(lambda t: (f"{t[0]}.{t[1]:02d}", F(t[0] * 100 + t[1], 100)))
_leaf = st.one_of(_ints.map(lambda i: (str(i), F(i))), _decs)


def _combine(children):
    return st.one_of(
        st.tuples(st.sampled_from("+-*/"), children, children, st.sampled_from(["", " ", "  "])).map(_binop),
        children.map(lambda c: (f"-({c[0]})", None if c[1] is None else -c[1])),
        children.map(lambda c: (f"({c[0]})", c[1])),
    )


def _binop(t):
    op, (ea, va), (eb, vb), sp = t
    text = f"({ea}){sp}{op}{sp}({eb})"
    if va is None or vb is None:
        return text, None
    if op == "+":
        return text, va + vb
    if op == "-":
        return text, va - vb
    if op == "*":
        return text, va * vb
    return text, (None if vb == 0 else va / vb)


_exprs = st.recursive(_leaf, _combine, max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_exprs)
def test_fuzz_agrees_with_fraction_arithmetic(pair):
    text, expected = pair
    # with <= 8 leaves below 1000 the values stay far inside the magnitude cap
    assert safe_eval(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text_never_raises(text):
    v = safe_eval(text)
    assert v is None or isinstance(v, F)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789+-*/()x. ", max_size=60))
def test_fuzz_grammar_alphabet_never_raises(text):
    v = safe_eval(text)
    assert v is None or isinstance(v, F)
    if v is not None:                              # a valid parse re-evaluates identically
        w = safe_eval(f"({text})")
        nest = text.count("-") + text.count("+") + text.count("(")
        assert w == v or (w is None and nest >= DEFAULT_LIMITS.max_depth)
